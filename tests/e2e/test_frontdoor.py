"""The front door (``deploy.frontdoor``: the real HAProxy) in front of two real accelserve
servers standing in for a group's replicas (the same HTTP and gRPC servers a replica runs),
without Ray: balancing, gRPC over HTTP/2, a replica SIGKILLed under load and reloads under
load cost no request. The Ray cluster tests (test_ray_serve.py) run the same door."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from accelserve.deploy.frontdoor import Endpoint, FrontDoor, Layout, haproxy_binary
from tests.conftest import ServerProcess, copy_example, free_port

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("frontdoor") / "models"
    simple = copy_example("simple", root)
    # Requests wait 200 ms in the batcher: a server killed under load surely holds some.
    delayed = root / "simple_delayed"
    (delayed / "1").mkdir(parents=True)
    (delayed / "1" / "model.onnx").write_bytes((simple / "1" / "model.onnx").read_bytes())
    config = (simple / "config.pbtxt").read_text().replace('"simple"', '"simple_delayed"')
    config = config.replace(
        "dynamic_batching { }", "dynamic_batching { max_queue_delay_microseconds: 200000 }"
    )
    (delayed / "config.pbtxt").write_text(config)
    return root


@pytest.fixture
def replicas(repository: Path) -> Iterator[list[ServerProcess]]:
    servers = [ServerProcess(repository) for _ in range(2)]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def endpoint(server: ServerProcess) -> Endpoint:
    return Endpoint(server.url, f"127.0.0.1:{server.grpc_port}")


@pytest.fixture
def door(replicas: list[ServerProcess]) -> Iterator[FrontDoor]:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("no HAProxy binary (ray[serve] not installed)")
    layout = Layout(
        host="127.0.0.1",
        http_port=free_port(),
        serve_address=replicas[0].url,  # stands in for Ray Serve's proxy
        groups=("default",),
        owners={"simple": "default", "simple_delayed": "default"},
        grpc_port=free_port(),
    )
    door = FrontDoor(layout, binary)
    door.start({"default": [endpoint(s) for s in replicas]})
    try:
        yield door
    finally:
        door.stop()


def infer(base: str, value: int, http: httpx.Client, model: str = "simple") -> httpx.Response:
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [value] * 16},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        ]
    }
    return http.post(f"{base}/v2/models/{model}/infer", json=body, timeout=60)


def served(server: ServerProcess, model: str = "simple") -> int:
    stats = httpx.get(f"{server.base}/v2/models/{model}/stats", timeout=10).json()
    return int(stats["model_stats"][0]["inference_count"])


def base(door: FrontDoor) -> str:
    return f"http://127.0.0.1:{door.layout.http_port}"


def test_requests_are_balanced_over_the_replicas(
    door: FrontDoor, replicas: list[ServerProcess]
) -> None:
    with httpx.Client() as http:
        answers = [infer(base(door), i, http) for i in range(40)]
        assert [a.status_code for a in answers] == [200] * 40
        assert answers[7].json()["outputs"][0]["data"] == [7 + k for k in range(16)]
        assert sorted(served(s) for s in replicas) == [20, 20]  # one connection, round robin
        # Server-wide routes and unknown models take the other path (here: replica 0).
        assert http.get(f"{base(door)}/v2/health/ready").status_code == 200
        missing = http.get(f"{base(door)}/v2/models/nope")
        assert missing.status_code == 404
        assert "nope" in missing.json()["error"]


def test_grpc_is_balanced_per_request_over_http2(
    door: FrontDoor, replicas: list[ServerProcess]
) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{door.layout.grpc_port}")
    assert client.is_model_ready("simple")
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = grpcclient.InferInput(name, [2, 16], "INT32")
        tensor.set_data_from_numpy(a)
        inputs.append(tensor)
    for _ in range(10):  # one HTTP/2 connection: HAProxy still spreads its streams
        np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), a + a)
    assert [served(s) for s in replicas] == [10, 10]  # 2 rows per request
    client.close()


def load(door: FrontDoor, during: threading.Event, workers: int = 8) -> list[str]:
    """``workers`` clients sending to ``simple_delayed`` until ``during`` is set and 20
    requests each are done; the failures."""
    failures: list[str] = []
    count = itertools.count()
    started = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client() as http:
            for i in itertools.count():
                if i >= 20 and during.is_set():
                    return
                value = worker * 1000 + i
                response = infer(base(door), value, http, "simple_delayed")
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                elif response.json()["outputs"][0]["data"] != [value + k for k in range(16)]:
                    failures.append(f"wrong answer {response.text}")
                if next(count) == workers * 3:
                    started.set()

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(client, w) for w in range(workers)]
        assert started.wait(60)
        during.set()
        for future in futures:
            future.result()
    return failures


def test_a_replica_killed_under_load_costs_no_request(
    door: FrontDoor, replicas: list[ServerProcess]
) -> None:
    go = threading.Event()

    def kill() -> None:
        go.wait()
        replicas[1].process.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    failures = load(door, go)
    killer.join()
    assert failures == []
    assert replicas[1].process.wait(10) == -signal.SIGKILL
    assert served(replicas[0], "simple_delayed") > 0


def test_reloads_under_load_cost_no_request(door: FrontDoor, replicas: list[ServerProcess]) -> None:
    go = threading.Event()
    both = [endpoint(s) for s in replicas]

    def reload_often() -> None:
        go.wait()
        for i in range(10):  # a replica leaves, comes back, ...
            assert door.sync({"default": both[: 1 + i % 2]})

    reloader = threading.Thread(target=reload_often)
    reloader.start()
    failures = load(door, go)
    reloader.join()
    assert failures == []
    assert door.reloads == 10


def test_asking_for_haproxy_without_its_binary_is_a_clear_error(repository: Path) -> None:
    pytest.importorskip("ray.serve")
    command = [
        sys.executable,
        "-m",
        "accelserve.cli",
        "serve",
        "--model-repository",
        str(repository),
        "--ray",
        "127.0.0.1:1",  # never reached: the ingress is checked first
        "--ray-ingress",
        "haproxy",
    ]
    env = {**os.environ, "RAY_SERVE_HAPROXY_BINARY_PATH": "/nonexistent/haproxy", "PATH": ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "--ray-ingress haproxy: no HAProxy found" in result.stderr


def test_an_unknown_ingress_is_refused_with_the_choices(repository: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "accelserve.cli",
        "serve",
        "--model-repository",
        str(repository),
        "--ray",
        "auto",
        "--ray-ingress",
        "nginx",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--ray-ingress: invalid choice: 'nginx'" in result.stderr
    assert "'haproxy'" in result.stderr and "'serve'" in result.stderr
