"""Every backend through the real server, instance placement on virtual JAX CPU devices, and
misconfigured models that stay UNAVAILABLE with their reason while the others serve.

One `accelserve serve` process, started with XLA_FLAGS=--xla_force_host_platform_device_count=4
so the host has four devices, cpu:0..cpu:3, serves a repository of models the test builds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from accelserve.devices import discover
from tests.conftest import ServerProcess
from tests.model_builders import (
    BUILDERS,
    build_jax,
    build_jax_spread,
    mlp_reference,
    native_weight_bytes,
    spread_reference,
    torch_parameter_bytes,
)

HOSTS = 4
XLA_ENV = {"XLA_FLAGS": f"--xla_force_host_platform_device_count={HOSTS}"}
# One past the GPUs this host has: absent everywhere.
ABSENT_GPU = sum(1 for info in discover() if info.device.kind == "cuda")
CPU2 = "instance_group [{ count: 2 kind: KIND_CPU }]\n"
EXTRA = {
    "torch_mlp": CPU2,
    "jax_mlp": "dynamic_batching { }\n",
    "native_mlp": CPU2 + "dynamic_batching { }\n",
    "python_mlp": "",
    "onnx_mlp": "dynamic_batching { }\n",
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backends") / "models"
    for name, build in BUILDERS.items():
        build(root, name, EXTRA[name])
    # No dynamic batching: one request per batch, so the batches show how requests spread.
    build_jax_spread(root, "jax_spread", f"instance_group [{{ count: {HOSTS} kind: KIND_CPU }}]\n")
    # Misconfigurations, each for a different reason.
    (root / "bad_platform" / "1").mkdir(parents=True)
    (root / "bad_platform" / "config.pbtxt").write_text('platform: "tensorrt_plan"\n')
    build_jax(
        root,
        "absent_gpu",
        f"instance_group [{{ count: 1 kind: KIND_GPU gpus: [{ABSENT_GPU}] }}]\n",
    )
    (root / "missing_file" / "1").mkdir(parents=True)
    (root / "missing_file" / "config.pbtxt").write_text('platform: "jax"\nmax_batch_size: 8\n')
    build_jax(root, "cuda_only", platforms=("cuda",))
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(repository, "--device", "cpu", env=XLA_ENV)
    yield process
    process.stop()


@pytest.fixture()
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


def _infer(
    client: httpclient.InferenceServerClient, model: str, x: np.ndarray, binary: bool = True
) -> np.ndarray:
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    output = httpclient.InferRequestedOutput("y", binary_data=binary)
    result = client.infer(model, [tensor], outputs=[output])
    y = result.as_numpy("y")
    assert y is not None
    return y


# -- every backend ---------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("model", list(BUILDERS))
def test_each_backend_serves_the_mlp(
    client: httpclient.InferenceServerClient, model: str, binary: bool
) -> None:
    assert client.is_model_ready(model)
    metadata = client.get_model_metadata(model)
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
        ("x", "FP32", [-1, 4])
    ]
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [
        ("y", "FP32", [-1, 3])
    ]
    for rows in (1, 5, 8):
        x = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        y = _infer(client, model, x, binary)
        assert y.dtype == np.float32 and y.shape == (rows, 3)
        np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_config_shows_where_each_instance_lives(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("torch_mlp")
    # Triton's fields stay as configured; "instances" is accelserve's addition.
    (group,) = config["instance_group"]
    assert (group["count"], group["kind"]) == (2, "KIND_CPU")
    assert [(i["instance"], i["device"]) for i in config["instances"]] == [
        ("torch_mlp_0", "cpu:0"),
        ("torch_mlp_1", "cpu:1"),
    ]
    assert [i["memory_bytes"] for i in config["instances"]] == [torch_parameter_bytes()] * 2
    native = client.get_model_config("native_mlp")["instances"]
    assert [(i["device"], i["memory_bytes"]) for i in native] == [
        ("cpu:0", native_weight_bytes()),
        ("cpu:1", native_weight_bytes()),
    ]
    # A backend that cannot tell its memory says so with null, and one instance by default.
    onnx = client.get_model_config("onnx_mlp")["instances"]
    assert [(i["instance"], i["device"], i["memory_bytes"]) for i in onnx] == [
        ("onnx_mlp_0", "cpu:0", None)
    ]


def test_statistics_report_device_memory_per_instance(server: ServerProcess) -> None:
    expected = [{"type": "CPU", "id": i, "byte_size": torch_parameter_bytes()} for i in (0, 1)]
    http = httpclient.InferenceServerClient(server.url)
    (stats,) = http.get_inference_statistics("torch_mlp")["model_stats"]
    assert stats["memory_usage"] == expected
    (onnx,) = http.get_inference_statistics("onnx_mlp")["model_stats"]
    assert onnx["memory_usage"] == []
    # The same field is Triton's ModelStatistics.memory_usage over gRPC.
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    (message,) = grpc.get_inference_statistics("torch_mlp").model_stats
    assert [(m.type, m.id, m.byte_size) for m in message.memory_usage] == [
        (e["type"], e["id"], e["byte_size"]) for e in expected
    ]
    grpc.close()


# -- instances on virtual JAX CPU devices ------------------------------------------------------


def test_jax_instances_spread_over_virtual_cpu_devices(server: ServerProcess) -> None:
    http = httpclient.InferenceServerClient(server.url)
    before = http.get_model_config("jax_spread")["instances"]
    assert [(i["instance"], i["device"]) for i in before] == [
        (f"jax_spread_{k}", f"cpu:{k}") for k in range(HOSTS)
    ]

    def one_client(seed: int) -> int:
        own = httpclient.InferenceServerClient(server.url)
        rng = np.random.default_rng(seed)
        for _ in range(6):
            x = rng.standard_normal((int(rng.integers(1, 5)), 4)).astype(np.float32)
            y = _infer(own, "jax_spread", x)
            np.testing.assert_allclose(y, spread_reference(x), rtol=1e-4, atol=1e-5)
        own.close()
        return 6

    with ThreadPoolExecutor(8) as pool:
        sent = sum(pool.map(one_client, range(8)))
    after = http.get_model_config("jax_spread")["instances"]
    ran = [a["execution_count"] - b["execution_count"] for a, b in zip(after, before, strict=True)]
    # Without dynamic batching each request is one batch: every batch is accounted for, and
    # more than one instance (so more than one virtual device) ran them.
    assert sum(ran) == sent
    assert sum(1 for count in ran if count > 0) >= 2, ran
    (stats,) = http.get_inference_statistics("jax_spread")["model_stats"]
    assert stats["execution_count"] == sum(a["execution_count"] for a in after)


def test_devices_command_lists_host_devices_and_planned_placement(repository: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "accelserve.cli", "devices", "--json"),
            *("--model-repository", str(repository), "--device", "cpu"),
        ],
        env={**os.environ, **XLA_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    hosts = [d for d in listing["devices"] if d["device"].startswith("cpu:")]
    assert [d["device"] for d in hosts] == [f"cpu:{k}" for k in range(HOSTS)]
    assert all("sharing the host's cores and memory" in d["name"] for d in hosts)
    models = {row["model"]: row for row in listing["models"]}
    assert models["jax_spread"]["devices"] == [f"cpu:{k}" for k in range(HOSTS)]
    assert models["torch_mlp"]["devices"] == ["cpu:0", "cpu:1"]
    assert models["onnx_mlp"]["devices"] == ["cpu:0"]
    assert f"cuda:{ABSENT_GPU} is not present" in models["absent_gpu"]["error"]


# -- misconfigurations -------------------------------------------------------------------------

REASONS = {
    "bad_platform": "platform/backend: expected one of",
    "absent_gpu": (
        f"model 'absent_gpu' instance_group[0] gpus: device: cuda:{ABSENT_GPU} is not present on "
        "this host; present: cpu:0, cpu:1, cpu:2, cpu:3"
    ),
    "missing_file": "model 'missing_file' version 1: expected file 'model.jax' is missing",
    "cuda_only": (
        "model 'cuda_only' version 1: 'model.jax' was exported for platforms ['cuda']; device "
        "cpu:0 needs 'cpu'"
    ),
}


@pytest.mark.parametrize("model", list(REASONS))
def test_a_misconfigured_model_is_unavailable_with_its_reason(
    server: ServerProcess, client: httpclient.InferenceServerClient, model: str
) -> None:
    index = {row["name"]: row for row in client.get_model_repository_index()}
    assert index[model]["state"] == "UNAVAILABLE"
    assert REASONS[model] in index[model]["reason"]
    assert "received 'tensorrt_plan'" in index["bad_platform"]["reason"]
    assert not client.is_model_ready(model)
    # Inference on it is a 503 that carries the reason, with no path or traceback.
    body: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]
    }
    response = httpx.post(f"{server.base}/v2/models/{model}/infer", json=body, timeout=10)
    assert response.status_code == 503
    message = response.json()["error"]
    assert REASONS[model] in message and "Traceback" not in message
    assert str(server.log_path.parent) not in message
    with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
        _infer(client, model, np.zeros((1, 4), np.float32))
    # The others keep serving.
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(_infer(client, "jax_mlp", x), mlp_reference(x), rtol=1e-5)
    assert sum(1 for row in index.values() if row["state"] == "READY") == len(BUILDERS) + 1
