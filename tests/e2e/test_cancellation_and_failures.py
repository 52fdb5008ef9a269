"""Against the real server: a request whose client went away (HTTP socket closed or half-closed,
gRPC call cancelled or past its deadline) while it waited is never computed and counts as
CANCELED; model names that cannot be a directory are 400 / INVALID_ARGUMENT on every route;
requests rejected before they reach the model are counted in nv_inference_request_failure.

The model is a Python-backend model held by a gate the test opens: a batch whose first value is
v logs its values, then waits until the file ``gates/v`` exists. Its log shows exactly which
requests were computed."""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from accelserve.protocol import grpc_service_pb2 as pb
from tests.conftest import ServerProcess
from tests.e2e.test_metrics import Samples, scrape, value

KEY = "cancel-test-key"
GATED_MODEL = """
import os
import time

class Model:
    def initialize(self, config, device):
        self.log = config["parameters"]["log"]["string_value"]
        self.gates = config["parameters"]["gates"]["string_value"]

    def execute(self, batch):
        x = batch["X"]
        with open(self.log, "a") as f:
            f.write(" ".join(str(int(v)) for v in x[:, 0]) + "\\n")
        gate = os.path.join(self.gates, str(int(x[0, 0])))
        while not os.path.exists(gate):
            time.sleep(0.005)
        return {"Y": x * 2}

    def finalize(self):
        pass
"""


def gated_config(log: Path, gates: Path) -> str:
    return f"""
name: "gated"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
dynamic_batching {{ }}
parameters {{ key: "log" value {{ string_value: "{log}" }} }}
parameters {{ key: "gates" value {{ string_value: "{gates}" }} }}
"""


@dataclass
class Gated:
    server: ServerProcess
    log: Path
    gates: Path

    def computed(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def open(self, v: int) -> None:
        (self.gates / str(v)).touch()

    def metric(self, name: str, **labels: str) -> float:
        return metric(scrape(self.server)[0], name, **labels)


def metric(samples: Samples, name: str, **labels: str) -> float:
    return value(samples, name, "gated", **labels)


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gated]:
    root = tmp_path_factory.mktemp("cancel")
    repository, gates, log = root / "models", root / "gates", root / "gated.log"
    (repository / "gated" / "1").mkdir(parents=True)
    gates.mkdir()
    (repository / "gated" / "1" / "model.py").write_text(GATED_MODEL)
    (repository / "gated" / "config.pbtxt").write_text(gated_config(log, gates))
    process = ServerProcess(
        repository, "--model-control-mode", "explicit", "--load-model", "*", "--api-key", KEY
    )
    yield Gated(process, log, gates)
    process.stop()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll another process's state (its log, its metrics) until ``condition()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def body(v: int) -> bytes:
    tensor = {"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [v]}
    return json.dumps({"inputs": [tensor]}).encode()


def raw_post(server: ServerProcess, path: str, data: bytes, *headers: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(data)}", *headers]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + data)
    return sock


def raw_status(server: ServerProcess, method: str, path: str, *headers: str) -> int:
    """The status of one request sent as raw bytes (the path exactly as given, not normalised)."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as sock:
        head = [f"{method} {path} HTTP/1.1", "Host: x", "Content-Length: 0", *headers]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, f"closed without an answer to {method} {path}"
            answer += chunk
    return int(answer.split()[1])


def hold_the_instance(
    gated: Gated, v: int, pool: cf.ThreadPoolExecutor
) -> cf.Future[httpx.Response]:
    """A request for ``v`` that runs, and holds the model's one instance until gate v opens."""
    url = f"{gated.server.base}/v2/models/gated/infer"
    running = pool.submit(httpx.post, url, content=body(v), timeout=60)
    wait_for(lambda: str(v) in gated.computed(), f"request {v} to run")
    return running


def finish(gated: Gated, v: int, running: cf.Future[httpx.Response]) -> None:
    gated.open(v)
    response = running.result()
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [2 * v]
    wait_for(lambda: gated.metric("nv_inference_pending_request_count") == 0, "no pending")


@pytest.mark.parametrize(("how", "v"), [("close", 11), ("half-close", 12)])
def test_http_client_gone_while_queued_is_never_computed(gated: Gated, how: str, v: int) -> None:
    canceled = gated.metric("nv_inference_request_failure_total", reason="CANCELED")
    with cf.ThreadPoolExecutor(1) as pool:
        running = hold_the_instance(gated, 1000 + v, pool)
        sock = raw_post(gated.server, "/v2/models/gated/infer", body(v))
        wait_for(lambda: gated.metric("nv_inference_pending_request_count") == 2, "queued")
        if how == "close":
            sock.close()
        else:
            sock.shutdown(socket.SHUT_WR)  # FIN: the server cannot tell it from a close
            assert sock.recv(4096) == b""  # closed without an answer
            sock.close()
        wait_for(
            lambda: (
                gated.metric("nv_inference_request_failure_total", reason="CANCELED")
                == canceled + 1
            ),
            "the cancellation to be counted",
        )
        assert gated.metric("nv_inference_pending_request_count") == 1
        finish(gated, 1000 + v, running)
    assert str(v) not in gated.computed()  # its row never reached the model
    stats = httpx.get(f"{gated.server.base}/v2/models/gated/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] >= 1


@pytest.mark.parametrize(("how", "v"), [("deadline", 21), ("cancel", 22)])
def test_grpc_call_cancelled_while_queued_is_never_computed(gated: Gated, how: str, v: int) -> None:
    canceled = gated.metric("nv_inference_request_failure_total", reason="CANCELED")
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{gated.server.grpc_port}")
    x = grpcclient.InferInput("X", [1, 1], "FP32")
    x.set_data_from_numpy(np.full((1, 1), v, np.float32))
    with cf.ThreadPoolExecutor(1) as pool:
        running = hold_the_instance(gated, 1000 + v, pool)
        errors: list[InferenceServerException | None] = []
        timeout = 2.0 if how == "deadline" else None  # long enough to be queued first
        call = client.async_infer(
            "gated", [x], lambda result, error: errors.append(error), client_timeout=timeout
        )
        wait_for(lambda: gated.metric("nv_inference_pending_request_count") == 2, "queued")
        if how == "cancel":
            call.cancel()
        else:
            wait_for(lambda: bool(errors), "the deadline to pass")
            assert errors[0] is not None and "DEADLINE" in str(errors[0]).upper()
        wait_for(
            lambda: (
                gated.metric("nv_inference_request_failure_total", reason="CANCELED")
                == canceled + 1
            ),
            "the cancellation to be counted",
        )
        finish(gated, 1000 + v, running)
    assert str(v) not in gated.computed()
    client.close()


BAD_NAMES = ["x" * 256, "\u00e9" * 128]  # 256 and 256 bytes (the second in 128 characters)
BAD_PATH_NAMES = ["..", ".hidden", "a%5Cb", "a%00b"]  # percent-encoded as a client must


@pytest.mark.parametrize("name", BAD_NAMES + BAD_PATH_NAMES)
def test_bad_model_names_are_400_on_every_http_route(gated: Gated, name: str) -> None:
    auth = f"Authorization: Bearer {KEY}"
    quoted = name if "%" in name else httpx.URL(f"/{name}").raw_path.decode()[1:]
    for method, path, *headers in (
        ("POST", f"/v2/models/{quoted}/infer"),
        ("GET", f"/v2/models/{quoted}"),
        ("GET", f"/v2/models/{quoted}/ready"),
        ("GET", f"/v2/models/{quoted}/config"),
        ("GET", f"/v2/models/{quoted}/stats"),
        ("GET", f"/v2/models/{quoted}/versions/1/ready"),
        ("POST", f"/v2/repository/models/{quoted}/load", auth),
        ("POST", f"/v2/repository/models/{quoted}/unload", auth),
    ):
        assert raw_status(gated.server, method, path, *headers) == 400, (method, path)
    assert raw_status(gated.server, "GET", "/v2/models/gated/ready") == 200


@pytest.mark.parametrize("name", [*BAD_NAMES, "a/b", "..", "../gated", "a\\b", "a\x00b"])
def test_bad_model_names_are_invalid_argument_over_grpc(gated: Gated, name: str) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{gated.server.grpc_port}")
    x = grpcclient.InferInput("X", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), np.float32))
    headers = {"authorization": f"Bearer {KEY}"}
    for call in (
        lambda: client.infer(name, [x]),
        lambda: client.get_model_metadata(name),
        lambda: client.get_model_config(name),
        lambda: client.is_model_ready(name),
        lambda: client.get_inference_statistics(name),
        lambda: client.load_model(name, headers=headers),
        lambda: client.unload_model(name, headers=headers),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value
        assert "model name: expected" in info.value.message()
    client.close()


def test_rejected_requests_are_counted_as_failures(gated: Gated) -> None:
    before, _ = scrape(gated.server)
    url = f"{gated.server.base}/v2/models/gated/infer"
    wrong_shape = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    assert httpx.post(url, content=b"{not json").status_code == 400  # does not decode
    assert httpx.post(url, json=wrong_shape).status_code == 400  # the config rejects it
    with grpc.insecure_channel(f"127.0.0.1:{gated.server.grpc_port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        message = pb.ModelInferRequest(model_name="gated")  # no inputs
        with pytest.raises(grpc.RpcError) as info:
            infer(message.SerializeToString(), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError):
            infer(b"\xff", timeout=30)  # names no model: server-wide
    absent = httpx.post(f"{gated.server.base}/v2/models/absent/infer", content=body(1))
    assert absent.status_code == 404  # names no model: server-wide
    after, _ = scrape(gated.server)
    name = "nv_inference_request_failure_total"
    assert metric(after, name, reason="REJECTED") == metric(before, name, reason="REJECTED") + 3
    for reason in ("CANCELED", "BACKEND", "OTHER"):
        assert metric(after, name, reason=reason) == metric(before, name, reason=reason)
    server_wide = "accelserve_inference_request_failure_no_model_total"
    key = (server_wide, frozenset({"reason": "REJECTED"}.items()))
    assert after[key] == before[key] + 2
