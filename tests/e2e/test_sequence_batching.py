"""Sequence batching through the real server with tritonclient (HTTP, gRPC, gRPC streaming):
stateful accumulators (Python-backend models) under the direct and oldest strategies, with
numeric and string correlation ids, the server's implicit state, and the errors that name the
sequence."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, copy_example

# A stateful model: the running sum of each correlation id, from the control inputs.
STATEFUL = """
import numpy as np


class Model:
    def initialize(self, config, device):
        self.sums = {}

    def execute(self, batch):
        x = batch["INPUT"]
        out = np.zeros_like(x)
        for row in range(x.shape[0]):
            if not batch["READY"][row, 0]:
                continue  # a direct batch's filler row
            cid = batch["CORRID"][row, 0]
            cid = cid.decode() if isinstance(cid, bytes) else int(cid)
            if batch["START"][row, 0]:
                self.sums[cid] = 0
            self.sums[cid] += int(x[row, 0])
            out[row, 0] = self.sums[cid]
            if batch["END"][row, 0]:
                del self.sums[cid]
        return {"OUTPUT": out}
"""
# A stateless model: the server keeps the sum as implicit state.
STATELESS = """
class Model:
    def execute(self, batch):
        total = batch["SUM_IN"] + batch["INPUT"]
        return {"OUTPUT": total, "SUM_OUT": total}
"""
CONTROLS = """control_input [
  { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
  { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
  { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
  { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: %s } ] } ]"""
STATE = 'state [{ input_name: "SUM_IN" output_name: "SUM_OUT" data_type: TYPE_INT32 dims: [ 1 ] }]'
TENSORS = """input [{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1 ] }]
output [{ name: "OUTPUT" data_type: TYPE_INT32 dims: [ 1 ] }]"""
IDLE_US = 1_000_000  # acc_short_idle's (requests of a test sequence come well within it)

MODELS = {
    "acc_direct": (STATEFUL, "direct { } " + CONTROLS % "TYPE_UINT64"),
    "acc_oldest": (STATEFUL, "oldest { max_candidate_sequences: 8 } " + CONTROLS % "TYPE_UINT64"),
    "acc_string": (STATEFUL, "oldest { } " + CONTROLS % "TYPE_STRING"),
    "acc_state_direct": (STATELESS, "direct { } " + STATE),
    "acc_state_oldest": (STATELESS, "oldest { } " + STATE),
    "acc_short_idle": (
        STATEFUL,
        f"max_sequence_idle_microseconds: {IDLE_US} " + CONTROLS % "TYPE_UINT64",
    ),
}
STATEFUL_MODELS = ["acc_direct", "acc_oldest", "acc_state_direct", "acc_state_oldest"]


def _build_onnx_accumulator(model_dir: Path) -> None:
    """A stateless ONNX model: OUTPUT = SUM_IN + INPUT (also SUM_OUT, the next state) and
    FIRST = START. Its config declares no inputs or outputs: they come from the file, without
    the control and state tensors the server fills in."""
    import onnx
    from onnx import TensorProto, helper

    rows: list[str | int | None] = ["batch", 1]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["SUM_IN", "INPUT"], ["OUTPUT"]),
            helper.make_node("Identity", ["OUTPUT"], ["SUM_OUT"]),
            helper.make_node("Identity", ["START"], ["FIRST"]),
        ],
        "accumulate",
        [
            helper.make_tensor_value_info(n, TensorProto.INT32, rows)
            for n in ("INPUT", "START", "SUM_IN")
        ],
        [
            helper.make_tensor_value_info(n, TensorProto.INT32, rows)
            for n in ("OUTPUT", "SUM_OUT", "FIRST")
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (model_dir / "1").mkdir(parents=True)
    onnx.save(model, str(model_dir / "1" / "model.onnx"))
    (model_dir / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\nsequence_batching {\n'
        '  control_input [{ name: "START" control [{ kind: CONTROL_SEQUENCE_START '
        "int32_false_true: [ 0, 1 ] }] }]\n  " + STATE + "\n}\n"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("sequences") / "models"
    copy_example("simple", repository)
    for name, (code, batching) in MODELS.items():
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "1" / "model.py").write_text(code)
        (repository / name / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: 8\n{TENSORS}\n'
            f"sequence_batching {{ {batching} }}\n"
        )
    _build_onnx_accumulator(repository / "acc_onnx")
    process = ServerProcess(repository)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.close()


def _inputs(module: Any, value: int) -> list[Any]:
    tensor = module.InferInput("INPUT", [1, 1], "INT32")
    tensor.set_data_from_numpy(np.array([[value]], np.int32))
    return [tensor]


Send = Callable[..., int]


def _sender(client: Any, module: Any, model: str) -> Send:
    def send(value: int, sid: int | str, start: bool = False, end: bool = False) -> int:
        result = client.infer(
            model,
            _inputs(module, value),
            sequence_id=sid,
            sequence_start=start,
            sequence_end=end,
        )
        return int(result.as_numpy("OUTPUT")[0, 0])

    return send


def _interleave(send: Send, a: int | str, b: int | str) -> None:
    """Two sequences, interleaved request by request: each keeps its own running sum."""
    assert send(1, a, start=True) == 1
    assert send(100, b, start=True) == 100
    assert send(2, a) == 3
    assert send(200, b) == 300
    assert send(3, a) == 6
    assert send(300, b, end=True) == 600
    assert send(4, a, end=True) == 10


@pytest.mark.parametrize("model", STATEFUL_MODELS)
def test_http_interleaved_sequences(http: httpclient.InferenceServerClient, model: str) -> None:
    _interleave(_sender(http, httpclient, model), 1001, 1002)


@pytest.mark.parametrize("model", STATEFUL_MODELS)
def test_grpc_interleaved_sequences(grpc: grpcclient.InferenceServerClient, model: str) -> None:
    _interleave(_sender(grpc, grpcclient, model), 2001, 2002)


@pytest.mark.parametrize("model", ["acc_string", "acc_state_direct"])
def test_string_correlation_ids(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient, model: str
) -> None:
    _interleave(_sender(http, httpclient, model), "alpha", "beta")
    _interleave(_sender(grpc, grpcclient, model), "gamma", "delta")


@pytest.mark.parametrize("model", ["acc_direct", "acc_oldest", "acc_string", "acc_state_oldest"])
def test_grpc_stream_interleaves_many_sequences(
    grpc: grpcclient.InferenceServerClient, model: str
) -> None:
    """Eight sequences, their requests interleaved on one stream without waiting for answers:
    each request sees the sum of its own sequence so far, in order."""
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    grpc.start_stream(callback=lambda result, error: results.put((result, error)))
    ids = [f"s{i}" if model == "acc_string" else 3000 + i for i in range(8)]
    expected: dict[str, int] = {}
    try:
        for step in range(5):
            for i, sid in enumerate(ids):
                value = (i + 1) * 10 + step
                request_id = f"{sid}-{step}"
                expected[request_id] = sum((i + 1) * 10 + s for s in range(step + 1))
                grpc.async_stream_infer(
                    model,
                    _inputs(grpcclient, value),
                    request_id=request_id,
                    sequence_id=sid,
                    sequence_start=step == 0,
                    sequence_end=step == 4,
                )
    finally:
        grpc.stop_stream()
    got = {}
    while not results.empty():
        result, error = results.get()
        assert error is None, error
        got[result.get_response().id] = int(result.as_numpy("OUTPUT")[0, 0])
    assert got == expected


def _http_error(
    http: httpclient.InferenceServerClient, model: str, sid: int | str, **kw: Any
) -> str:
    with pytest.raises(InferenceServerException) as info:
        http.infer(model, _inputs(httpclient, 1), sequence_id=sid, **kw)
    assert info.value.status() == "400", info.value
    return str(info.value.message())


def _grpc_error(
    grpc: grpcclient.InferenceServerClient, model: str, sid: int | str, **kw: Any
) -> str:
    with pytest.raises(InferenceServerException) as info:
        grpc.infer(model, _inputs(grpcclient, 1), sequence_id=sid, **kw)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value
    return str(info.value.message())


def test_requests_outside_a_sequence_are_400_naming_it(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    message = _http_error(http, "acc_direct", 4001)
    assert "sequence 4001 to model 'acc_direct' must specify the START flag" in message
    message = _grpc_error(grpc, "acc_string", "unknown-g")
    assert "sequence 'unknown-g' to model 'acc_string' must specify the START flag" in message
    send = _sender(http, httpclient, "acc_oldest")
    assert send(5, 4002, start=True) == 5
    message = _http_error(http, "acc_oldest", 4002, sequence_start=True)
    assert "sequence 4002 of model 'acc_oldest' is already active" in message
    assert send(5, 4002, end=True) == 10
    message = _grpc_error(grpc, "acc_oldest", 4002)
    assert "sequence 4002 of model 'acc_oldest' has ended (sequence_end)" in message
    # Without a correlation id, and with a string id for a numeric CORRID.
    with pytest.raises(InferenceServerException) as info:
        http.infer("acc_direct", _inputs(httpclient, 1))
    assert info.value.status() == "400"
    assert "must specify a non-zero or non-empty correlation ID" in str(info.value.message())
    message = _http_error(http, "acc_direct", "text", sequence_start=True)
    assert "takes numeric correlation ids" in message and "'text'" in message


def test_expired_sequence_is_400_and_other_models_keep_serving(
    http: httpclient.InferenceServerClient, server: ServerProcess
) -> None:
    send = _sender(http, httpclient, "acc_short_idle")
    assert send(1, 5001, start=True) == 1
    time.sleep(1.2 * IDLE_US / 1e6)  # past the model's idle time: the server expires the sequence
    message = _http_error(http, "acc_short_idle", 5001)
    assert "sequence 5001 of model 'acc_short_idle' expired" in message
    assert "max_sequence_idle_microseconds" in message
    assert send(7, 5001, start=True) == 7  # a new start begins it again
    assert send(2, 5001) == 9
    # Other models are unaffected by the refusals.
    response = httpx.post(
        f"{server.base}/v2/models/simple/infer",
        json={
            "inputs": [
                {"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
                for n in ("INPUT0", "INPUT1")
            ]
        },
    )
    assert response.status_code == 200, response.text
    assert send(1, 5001, end=True) == 10


def test_http_json_parameters_and_bad_types(server: ServerProcess) -> None:
    """Raw JSON: sequence_id as a string or number, flags as booleans; wrong types are 400."""
    url = f"{server.base}/v2/models/acc_direct/infer"

    def post(parameters: dict[str, Any]) -> httpx.Response:
        body = {
            "parameters": parameters,
            "inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [1, 1], "data": [4]}],
        }
        return httpx.post(url, json=body)

    ok = post({"sequence_id": "json-seq", "sequence_start": True, "sequence_end": True})
    assert ok.status_code == 400  # acc_direct's CORRID is numeric
    ok = post({"sequence_id": 6001, "sequence_start": True, "sequence_end": True})
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0]["data"] == [4]
    bad = post({"sequence_id": 6002, "sequence_start": "yes"})
    assert bad.status_code == 400
    assert (
        "parameter 'sequence_start': expected a boolean; received str 'yes'" in bad.json()["error"]
    )
    bad = post({"sequence_id": 1.5, "sequence_start": True})
    assert bad.status_code == 400 and "parameter 'sequence_id'" in bad.json()["error"]
    wide = httpx.post(
        url,
        json={
            "parameters": {"sequence_id": 6003, "sequence_start": True},
            "inputs": [{"name": "INPUT", "datatype": "INT32", "shape": [2, 1], "data": [1, 2]}],
        },
    )
    assert wide.status_code == 400 and "batch size 1" in wide.json()["error"]


def test_config_shows_sequence_batching(http: httpclient.InferenceServerClient) -> None:
    config = http.get_model_config("acc_oldest")
    batching = config["sequence_batching"]
    assert batching["oldest"]["max_candidate_sequences"] == 8
    assert [c["name"] for c in batching["control_input"]] == ["START", "READY", "END", "CORRID"]
    assert [i["name"] for i in config["input"]] == ["INPUT"]  # control inputs are not client inputs


def test_statistics_count_sequence_requests(http: httpclient.InferenceServerClient) -> None:
    before = http.get_inference_statistics("acc_state_oldest")["model_stats"][0]
    _interleave(_sender(http, httpclient, "acc_state_oldest"), 9001, 9002)
    after = http.get_inference_statistics("acc_state_oldest")["model_stats"][0]
    assert (
        after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
        == 7
    )
    assert after["inference_count"] - before["inference_count"] == 7
    assert after["execution_count"] - before["execution_count"] == 7  # one at a time, in turn


def test_bad_sequence_config_fails_its_load_only(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    good = repository / "acc"
    (good / "1").mkdir(parents=True)
    (good / "1" / "model.py").write_text(STATEFUL)
    (good / "config.pbtxt").write_text(
        f'backend: "python"\nmax_batch_size: 8\n{TENSORS}\n'
        f"sequence_batching {{ {CONTROLS % 'TYPE_UINT64'} }}\n"
    )
    bad = repository / "bad"
    (bad / "1").mkdir(parents=True)
    (bad / "1" / "model.py").write_text(STATEFUL)
    (bad / "config.pbtxt").write_text(
        f'backend: "python"\nmax_batch_size: 8\n{TENSORS}\n'
        'sequence_batching { control_input [{ name: "C" control [{ kind: CONTROL_SEQUENCE_CORRID '
        "data_type: TYPE_FP32 }] }] }\n"
    )
    process = ServerProcess(repository)
    try:
        index = httpx.post(f"{process.base}/v2/repository/index").json()
        states = {m["name"]: m for m in index}
        assert states["acc"]["state"] == "READY"
        assert states["bad"]["state"] == "UNAVAILABLE"
        assert "CONTROL_SEQUENCE_CORRID" in states["bad"]["reason"]
        assert "expected data_type one of" in states["bad"]["reason"]
    finally:
        process.stop()


def test_onnx_model_with_server_carried_state(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    """Any backend can be stateful with implicit state: an ONNX graph that only adds."""
    config = http.get_model_config("acc_onnx")
    assert [i["name"] for i in config["input"]] == ["INPUT"]
    assert sorted(o["name"] for o in config["output"]) == ["FIRST", "OUTPUT"]
    _interleave(_sender(http, httpclient, "acc_onnx"), 7001, "onnx-b")
    first = grpc.infer("acc_onnx", _inputs(grpcclient, 5), sequence_id=7002, sequence_start=True)
    later = grpc.infer("acc_onnx", _inputs(grpcclient, 6), sequence_id=7002, sequence_end=True)
    assert first.as_numpy("FIRST").tolist() == [[1]] and later.as_numpy("FIRST").tolist() == [[0]]
    assert later.as_numpy("OUTPUT").tolist() == [[11]] and later.as_numpy("SUM_OUT") is None


def test_stream_error_names_the_sequence_and_the_stream_goes_on(
    grpc: grpcclient.InferenceServerClient,
) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    grpc.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        grpc.async_stream_infer("acc_direct", _inputs(grpcclient, 1), sequence_id=8001)
        grpc.async_stream_infer(
            "acc_direct", _inputs(grpcclient, 2), sequence_id=8002, sequence_start=True
        )
    finally:
        grpc.stop_stream()
    (bad, bad_error), (good, good_error) = results.get(), results.get()
    assert bad is None and "sequence 8001 to model 'acc_direct' must specify the START flag" in str(
        bad_error
    )
    assert good_error is None and good.as_numpy("OUTPUT").tolist() == [[2]]
