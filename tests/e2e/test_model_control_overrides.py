"""Model control as Triton clients use it: explicit mode loads only --load-model models at
start-up, and tritonclient's load_model(name, config=..., files=...) loads with a config
override or from uploaded files, over HTTP and gRPC, with Triton's "failed to load" 400s."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, copy_example
from tests.e2e.test_onnx_strings import build_string_cast

KEY = "override-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
GRPC_AUTH = {"authorization": f"Bearer {KEY}"}  # gRPC metadata keys are lower-case


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("control") / "models"
    copy_example("simple", root)
    build_string_cast(root)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        repository, "--model-control-mode", "explicit", "--load-model", "simple", "--api-key", KEY
    )
    yield process
    process.stop()


def simple_config(**changes: object) -> dict:
    config: dict = {
        "name": "simple",
        "platform": "onnxruntime_onnx",
        "max_batch_size": 8,
        "input": [{"name": f"INPUT{i}", "data_type": "TYPE_INT32", "dims": [16]} for i in (0, 1)],
        "output": [{"name": f"OUTPUT{i}", "data_type": "TYPE_INT32", "dims": [16]} for i in (0, 1)],
    }
    config.update(changes)
    return config


def _infer_simple(client: httpclient.InferenceServerClient, model: str) -> np.ndarray:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = [httpclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in (0, 1)]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    result = client.infer(model, inputs).as_numpy("OUTPUT0")
    assert result is not None
    return result


def test_explicit_mode_loads_only_the_named_models(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.url)
    assert client.is_model_ready("simple")
    assert not client.is_model_ready("string_cast")
    index = {row["name"]: row for row in client.get_model_repository_index()}
    assert index["string_cast"]["state"] == "UNAVAILABLE"
    assert index["string_cast"]["reason"] == "not loaded"
    client.load_model("string_cast", headers=GRPC_AUTH)
    assert client.is_model_ready("string_cast")


def test_config_override_over_http(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.url)
    client.load_model("simple", headers=AUTH, config=json.dumps(simple_config(max_batch_size=4)))
    assert client.get_model_config("simple")["max_batch_size"] == 4
    np.testing.assert_array_equal(_infer_simple(client, "simple"), 2 * np.arange(16).reshape(1, 16))
    client.load_model("simple", headers=AUTH)  # plain load: the repository's config again
    assert client.get_model_config("simple")["max_batch_size"] == 8


def test_file_override_over_grpc(server: ServerProcess, repository: Path) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    model = (repository / "simple" / "1" / "model.onnx").read_bytes()
    config = json.dumps(simple_config(name="uploaded"))
    client.load_model(
        "uploaded", headers=GRPC_AUTH, config=config, files={"file:1/model.onnx": model}
    )
    assert client.is_model_ready("uploaded")
    http = httpclient.InferenceServerClient(server.url)
    np.testing.assert_array_equal(_infer_simple(http, "uploaded"), 2 * np.arange(16).reshape(1, 16))
    client.unload_model("uploaded", headers=GRPC_AUTH)
    assert not client.is_model_ready("uploaded")


def test_file_override_over_http(server: ServerProcess, repository: Path) -> None:
    client = httpclient.InferenceServerClient(server.url)
    model = (repository / "simple" / "1" / "model.onnx").read_bytes()
    config = json.dumps(simple_config(name="uploaded_http"))
    # tritonclient.http sends each file base64-encoded, as Triton's protocol says
    client.load_model(
        "uploaded_http", headers=AUTH, config=config, files={"file:1/model.onnx": model}
    )
    np.testing.assert_array_equal(
        _infer_simple(client, "uploaded_http"), 2 * np.arange(16).reshape(1, 16)
    )


@pytest.mark.parametrize(
    ("parameters", "needle"),
    [
        ({"config": "{not json"}, "parameter 'config' is not a model configuration"),
        ({"config": json.dumps({"name": "other"})}, "name: expected 'simple'"),
        ({"config": json.dumps({"nonsense_field": 1})}, "nonsense_field"),
        ({"file:1/model.onnx": "AAAA"}, "need the model's configuration too"),
        ({"config": "{}", "file:model.onnx": "AAAA"}, "expected 'file:<version>/<file name>'"),
        ({"config": "{}", "file:1/../../x": "AAAA"}, "a path inside the model"),
        ({"config": "{}", "file:1/model.onnx": "@@not base64"}, "as base64 text"),
        ({"unload_dependents": True}, "unknown load parameter 'unload_dependents'"),
        ({"config": 5}, "expected the model configuration as a JSON string"),
    ],
)
def test_bad_overrides_are_400s_and_simple_keeps_serving(
    server: ServerProcess, parameters: dict, needle: str
) -> None:
    url = f"{server.base}/v2/repository/models/simple/load"
    response = httpx.post(url, json={"parameters": parameters}, headers=AUTH)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error.startswith("failed to load 'simple'") and needle in error
    client = httpclient.InferenceServerClient(server.url)
    assert client.is_model_ready("simple")
    np.testing.assert_array_equal(_infer_simple(client, "simple"), 2 * np.arange(16).reshape(1, 16))


def test_a_config_that_does_not_fit_the_model_fails_the_load_clearly(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    bad = simple_config(input=[{"name": "WRONG", "data_type": "TYPE_INT32", "dims": [16]}])
    bad["name"] = "string_cast"
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("string_cast", headers=GRPC_AUTH, config=json.dumps(bad))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "failed to load 'string_cast'" in caught.value.message()
    http = httpclient.InferenceServerClient(server.url)
    assert http.is_model_ready("simple")  # the others keep serving
    # and the model loads again from its own files
    client.load_model("string_cast", headers=GRPC_AUTH)
    assert client.is_model_ready("string_cast")


def test_overrides_need_the_key(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.url)
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("simple", config=json.dumps(simple_config()))
    assert caught.value.status() == "401"
    grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    with pytest.raises(InferenceServerException) as caught:
        grpc.load_model("simple", config="{not json", headers={"authorization": "Bearer wrong"})
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"


def _serve(repository: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "accelserve.cli", "serve", "--model-repository"]
    command += [str(repository), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)


def test_start_up_refuses_unknown_or_misplaced_load_model(repository: Path) -> None:
    done = _serve(
        repository, "--model-control-mode", "explicit", "--api-key", KEY, "--load-model", "nope"
    )
    assert done.returncode == 2
    assert "--load-model nope: no such model in the repository" in done.stderr
    done = _serve(repository, "--load-model", "simple")
    assert done.returncode == 2
    assert "--load-model needs --model-control-mode explicit" in done.stderr
