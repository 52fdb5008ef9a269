"""The gRPC frontend through a real server process: tritonclient.grpc (sync and asyncio), raw
messages for what tritonclient will not send, and every bad input of the HTTP tests with the
same outcome (HTTP status -> gRPC status) and, where the data plane or shared codec decides,
the very same error text."""

from __future__ import annotations

import asyncio
import queue
import signal
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from accelserve.protocol import grpc_service_pb2 as pb
from tests.conftest import ServerProcess, copy_example
from tests.e2e.test_batching_and_queue import SLOW_MODEL, slow_config
from tests.e2e.test_http_bad_input import CASES as HTTP_CASES

SERVICE = "/inference.GRPCInferenceService/"
ROW = list(range(16))
KEY = "grpc-key-456"
HTTP_TO_GRPC = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


@pytest.fixture()
def client(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as ch:
        yield ch


def _call(channel: grpc.Channel, method: str, request: Any, reply: Any = None, **kw: Any) -> Any:
    stub = channel.unary_unary(
        SERVICE + method,
        request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
        response_deserializer=(reply or pb.ModelInferResponse).FromString,
    )
    return stub(request, timeout=30, **kw)


def _error(channel: grpc.Channel, method: str, request: Any, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _call(channel, method, request, **kw)
    error = info.value
    details = error.details() or ""
    assert "Traceback" not in details and ".py" not in details, details
    return error


def _inputs(a: np.ndarray, b: np.ndarray) -> list[grpcclient.InferInput]:
    inputs = []
    for name, data in (("INPUT0", a), ("INPUT1", b)):
        tensor = grpcclient.InferInput(name, list(data.shape), "INT32")
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return inputs


def _good_request(rows: int = 1) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="simple")
    a = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[rows, 16])
        request.raw_input_contents.append(a.tobytes())
    return request


def _assert_still_serving(channel: grpc.Channel) -> None:
    response = _call(channel, "ModelInfer", _good_request())
    out = np.frombuffer(response.raw_output_contents[0], np.int32)
    np.testing.assert_array_equal(out, 2 * np.arange(16))


# ------------------------------------------------------------------------- tritonclient (sync)


def test_health_and_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert not client.is_model_ready("broken")
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "accelserve"
    assert "statistics" in metadata["extensions"]


def test_model_metadata_and_config(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("simple")
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == "onnxruntime_onnx"
    assert {i.name: (i.datatype, list(i.shape)) for i in metadata.inputs} == {
        "INPUT0": ("INT32", [-1, 16]),
        "INPUT1": ("INT32", [-1, 16]),
    }
    config = client.get_model_config("simple").config  # tritonclient's own ModelConfig class
    assert config.name == "simple"
    assert config.max_batch_size == 8
    assert list(config.input[0].dims) == [16]
    assert config.input[0].data_type == 8  # TYPE_INT32 in Triton's enum
    assert config.HasField("dynamic_batching")
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, 2)]  # KIND_CPU
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    auto = client.get_model_config("simple_auto", as_json=True)["config"]
    assert auto["platform"] == "onnxruntime_onnx" and "dynamic_batching" in auto


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_infer_simple(client: grpcclient.InferenceServerClient, rows: int) -> None:
    rng = np.random.default_rng(rows)
    a = rng.integers(-1000, 1000, size=(rows, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(rows, 16), dtype=np.int32)
    result = client.infer("simple", _inputs(a, b), request_id=f"r{rows}")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    response = result.get_response()
    assert response.id == f"r{rows}"
    assert (response.model_name, response.model_version) == ("simple", "1")


def test_infer_one_output_and_priority_timeout(client: grpcclient.InferenceServerClient) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    result = client.infer(
        "simple",
        _inputs(a, a),
        outputs=[grpcclient.InferRequestedOutput("OUTPUT1")],
        timeout=5_000_000,  # sent as int64_param "timeout" (microseconds)
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros((1, 16), np.int32))
    assert result.as_numpy("OUTPUT0") is None


def test_statistics(client: grpcclient.InferenceServerClient) -> None:
    a = np.ones((2, 16), dtype=np.int32)
    before = client.get_inference_statistics("simple").model_stats[0]
    client.infer("simple", _inputs(a, a))
    after = client.get_inference_statistics("simple").model_stats[0]
    assert (after.name, after.version) == ("simple", "1")
    assert after.inference_count == before.inference_count + 2
    assert after.execution_count == before.execution_count + 1
    stats = after.inference_stats
    assert stats.success.count == before.inference_stats.success.count + 1
    assert stats.success.ns > before.inference_stats.success.ns
    assert stats.queue.count == stats.compute_infer.count == stats.success.count
    assert after.last_inference > 0
    assert any(b.batch_size == 2 for b in after.batch_stats)
    every = client.get_inference_statistics(as_json=True)["model_stats"]
    assert {"simple", "simple_auto"} <= {m["name"] for m in every}
    with pytest.raises(InferenceServerException) as info:
        client.get_inference_statistics("nope")
    assert info.value.status() == "StatusCode.NOT_FOUND"


def test_repository_index(client: grpcclient.InferenceServerClient, channel: grpc.Channel) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["simple"].state == "READY" and index["simple"].version == "1"
    assert index["broken"].state == "UNAVAILABLE"
    assert "model.onnx" in index["broken"].reason
    ready = _call(
        channel,
        "RepositoryIndex",
        pb.RepositoryIndexRequest(ready=True),
        reply=pb.RepositoryIndexResponse,
    )
    assert {m.state for m in ready.models} == {"READY"}
    assert {"simple", "simple_auto"} <= {m.name for m in ready.models}


def test_stream_infer(client: grpcclient.InferenceServerClient) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i in range(4):
            a = np.full((1, 16), i, dtype=np.int32)
            client.async_stream_infer("simple", _inputs(a, a), request_id=str(i))
        client.async_stream_infer("nope", _inputs(a, a), request_id="bad")
        answers = [results.get(timeout=30) for _ in range(5)]
    finally:
        client.stop_stream()
    good = {r.get_response().id: r.as_numpy("OUTPUT0") for r, e in answers if e is None}
    assert sorted(good) == ["0", "1", "2", "3"]
    for i in range(4):
        np.testing.assert_array_equal(good[str(i)], np.full((1, 16), 2 * i))
    errors = [e for _, e in answers if e is not None]
    assert len(errors) == 1 and "Request for unknown model: 'nope'" in errors[0].message()


# -------------------------------------------------------------------------- tritonclient.aio


def test_asyncio_client(server: ServerProcess) -> None:
    async def run() -> None:
        client = aioclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        try:
            assert await client.is_server_ready()
            assert await client.is_model_ready("simple")
            metadata = await client.get_model_metadata("simple", as_json=True)
            assert metadata["name"] == "simple"
            config = await client.get_model_config("simple", as_json=True)
            assert config["config"]["max_batch_size"] == 8
            arrays = [np.full((1, 16), i, dtype=np.int32) for i in range(32)]
            results = await asyncio.gather(
                *(
                    client.infer("simple", _inputs(a, a), request_id=str(i))
                    for i, a in enumerate(arrays)
                )
            )
            for i, result in enumerate(results):
                assert result.get_response().id == str(i)
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), 2 * arrays[i])
            stats = await client.get_inference_statistics("simple", as_json=True)
            assert int(stats["model_stats"][0]["inference_count"]) >= 32
            with pytest.raises(InferenceServerException) as info:
                await client.infer("nope", _inputs(arrays[0], arrays[0]))
            assert info.value.status() == "StatusCode.NOT_FOUND"
        finally:
            await client.close()

    asyncio.run(run())


# --------------------------------------------------------------------------- raw messages


def test_typed_contents(channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="simple", model_version="1", id="typed")
    for name, values in (("INPUT0", ROW * 2), ("INPUT1", [1] * 32)):
        tensor = request.inputs.add(name=name, datatype="INT32", shape=[2, 16])
        tensor.contents.int_contents.extend(values)
    response = _call(channel, "ModelInfer", request)
    assert response.id == "typed"
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    assert list(response.outputs[0].shape) == [2, 16] and response.outputs[0].datatype == "INT32"
    out0 = np.frombuffer(response.raw_output_contents[0], np.int32).reshape(2, 16)
    np.testing.assert_array_equal(out0, np.array(ROW * 2).reshape(2, 16) + 1)


def _to_grpc(body: dict[str, Any], raw: bool, model: str = "simple") -> pb.ModelInferRequest:
    """An HTTP test's JSON body as the equivalent gRPC request (typed contents or raw)."""
    request = pb.ModelInferRequest(model_name=model)
    for key, value in body.get("parameters", {}).items():
        request.parameters[key].int64_param = value
    for spec in body["inputs"]:
        tensor = request.inputs.add(
            name=spec["name"], datatype=spec["datatype"], shape=spec["shape"]
        )
        data = list(np.asarray(spec["data"], dtype=object).ravel())
        strings = bool(data) and isinstance(data[0], str)
        if raw and strings:
            request.raw_input_contents.append(
                b"".join(struct.pack("<I", 1) + s.encode() for s in data)
            )
        elif raw:
            dtype = {"FP32": np.float32}.get(spec["datatype"], np.int32)
            request.raw_input_contents.append(np.asarray(data, dtype).tobytes())
        elif strings:
            tensor.contents.bytes_contents.extend(s.encode() for s in data)
        elif spec["datatype"] == "FP32":
            tensor.contents.fp32_contents.extend(data)
        else:
            tensor.contents.int_contents.extend(data)
    for output in body.get("outputs", []):
        request.outputs.add(name=output["name"])
    return request


# Cases whose gRPC text differs from HTTP's because the wire differs (JSON strings vs bytes).
DIFFERENT_TEXT = {"strings for INT32"}
TRANSLATABLE = sorted(case for case in HTTP_CASES if case != "inputs not a list")


@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
@pytest.mark.parametrize("case", TRANSLATABLE)
def test_http_bad_inputs_over_grpc(
    server: ServerProcess, channel: grpc.Channel, case: str, raw: bool
) -> None:
    body, status, needle = HTTP_CASES[case]
    error = _error(channel, "ModelInfer", _to_grpc(body, raw))
    assert error.code() == HTTP_TO_GRPC[status], error.details()
    assert needle in error.details(), error.details()
    if not raw and case not in DIFFERENT_TEXT:
        http_error = httpx.post(f"{server.base}/v2/models/simple/infer", json=body).json()["error"]
        assert error.details() == http_error
    _assert_still_serving(channel)


def test_raw_contents_count_and_mixing(channel: grpc.Channel) -> None:
    # gRPC's nearest thing to HTTP's "inputs not a list": data that does not line up with inputs
    request = _good_request()
    request.raw_input_contents.append(b"\0" * 64)
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        "raw_input_contents: expected one entry per input not in shared memory (2); received 3"
        in error.details()
    )
    request = _good_request()
    request.inputs[0].contents.int_contents.extend(ROW)
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "both" in error.details()
    request = _good_request()
    del request.raw_input_contents[:]
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "neither" in error.details()
    _assert_still_serving(channel)


def test_unknown_model_and_version(server: ServerProcess, channel: grpc.Channel) -> None:
    request = _good_request()
    request.model_name = "nope"
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    http = httpx.post(f"{server.base}/v2/models/nope/infer", json={"inputs": []}).json()["error"]
    assert error.details() == http == "Request for unknown model: 'nope' is not found"
    request = _good_request()
    request.model_version = "7"
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "version 7" in error.details()
    for method, message, reply in (
        ("ModelMetadata", pb.ModelMetadataRequest(name="nope"), pb.ModelMetadataResponse),
        ("ModelReady", pb.ModelReadyRequest(name="nope"), pb.ModelReadyResponse),
        ("ModelConfig", pb.ModelConfigRequest(name="nope"), pb.ModelConfigResponse),
    ):
        error = _error(channel, method, message, reply=reply)
        assert error.code() == grpc.StatusCode.NOT_FOUND, method
        assert "Request for unknown model" in error.details()


def test_unavailable_model_infer(channel: grpc.Channel) -> None:
    request = _good_request()
    request.model_name = "broken"
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.UNAVAILABLE and "broken" in error.details()


def test_malformed_message(channel: grpc.Channel) -> None:
    error = _error(channel, "ModelInfer", b"\x0a\xff\xff\xff\xff\x0f")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed ModelInferRequest" in error.details()
    error = _error(channel, "ModelConfig", b"\xff", reply=pb.ModelConfigResponse)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    _assert_still_serving(channel)


def test_bytes_length_prefix_past_buffer(server: ServerProcess, channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="simple")
    request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", 1000) + b"abcd")
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "input 'INPUT0': BYTES element 0 has a length prefix of 1000 bytes that runs past its "
        "buffer (4 bytes remain)"
    )


def test_typed_contents_checks(channel: grpc.Channel) -> None:
    request = pb.ModelInferRequest(model_name="simple")
    tensor = request.inputs.add(name="INPUT0", datatype="FP16", shape=[1, 16])
    tensor.contents.fp32_contents.extend([1.0] * 16)
    error = _error(channel, "ModelInfer", request)
    assert "FP16 has no typed field" in error.details()
    request = pb.ModelInferRequest(model_name="simple")
    tensor = request.inputs.add(name="INPUT0", datatype="INT8", shape=[1, 2])
    tensor.contents.int_contents.extend([1, 300])
    error = _error(channel, "ModelInfer", request)
    assert "INT8 values must lie in [-128, 127]; received 300 at element 1" in error.details()
    request = _good_request()
    request.inputs[0].parameters["shared_memory_region"].string_param = "r"
    error = _error(channel, "ModelInfer", request)
    assert "'shared_memory_byte_size': expected a non-negative integer" in error.details()
    request = _good_request()
    request.outputs.add(name="OUTPUT0").parameters["classification"].string_param = "2"
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "classification" in error.details()


def test_message_size_limit(channel: grpc.Channel) -> None:
    # Above gRPC's 4 MB default, below the server's 64 MiB limit: decoded, rejected on content.
    request = _good_request()
    request.raw_input_contents[0] = b"\0" * (8 * 1024 * 1024)
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "received 8388608" in error.details()
    # Above the limit: RESOURCE_EXHAUSTED, like HTTP's 413.
    request.raw_input_contents[0] = b"\0" * (64 * 1024 * 1024 + 1)
    error = _error(channel, "ModelInfer", request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _assert_still_serving(channel)


def test_unknown_method(channel: grpc.Channel) -> None:
    for method in ("Nope", "TraceSetting"):
        error = _error(channel, method, b"")
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED


# ----------------------------------------------------------------------------- model control


def test_model_control_is_off_by_default(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as info:
        client.unload_model("simple", headers={"authorization": "Bearer anything"})
    assert info.value.status() == "StatusCode.PERMISSION_DENIED"
    assert "model control is disabled" in info.value.message()
    assert client.is_model_ready("simple")


def test_model_control_needs_the_key(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    copy_example("simple", repository)
    process = ServerProcess(
        repository, "--model-control-mode", "explicit", "--load-model", "*", "--api-key", KEY
    )
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{process.grpc_port}")
        for headers, details in (
            (None, "needs an API key"),
            ({"authorization": "Bearer bad"}, "not valid"),
        ):
            with pytest.raises(InferenceServerException) as info:
                client.unload_model("simple", headers=headers)
            assert info.value.status() == "StatusCode.UNAUTHENTICATED"
            assert details in info.value.message()
        assert client.is_model_ready("simple")
        good = {"authorization": f"Bearer {KEY}"}
        client.unload_model("simple", headers=good)
        assert not client.is_model_ready("simple")
        index = client.get_model_repository_index(as_json=True)["models"]
        assert index == [{"name": "simple", "state": "UNAVAILABLE", "reason": "unloaded"}]
        # a config override (Triton's JSON form; the rest completed from the model file)
        client.load_model("simple", headers=good, config='{"max_batch_size": 2}')
        assert client.get_model_config("simple").config.max_batch_size == 2
        client.load_model("simple", headers=good)
        assert client.is_model_ready("simple")
        with pytest.raises(InferenceServerException) as info:
            client.load_model("absent", headers=good)
        assert info.value.status() == "StatusCode.NOT_FOUND"
        a = np.ones((1, 16), dtype=np.int32)
        np.testing.assert_array_equal(
            client.infer("simple", _inputs(a, a)).as_numpy("OUTPUT0"), a * 2
        )
    finally:
        process.stop()


def test_grpc_port_in_use_is_a_clear_error(server: ServerProcess, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    copy_example("simple", repository)
    with pytest.raises(RuntimeError) as info:  # the server exits before it is ready
        ServerProcess(repository, "--grpc-port", str(server.grpc_port))
    message = str(info.value)
    assert f"cannot listen on 127.0.0.1:{server.grpc_port}" in message
    assert "Traceback" not in message


# ------------------------------------------------------------------------- graceful shutdown


def test_sigterm_finishes_inflight_grpc_requests(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    (repository / "slow" / "1").mkdir(parents=True)
    (repository / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    (repository / "slow" / "config.pbtxt").write_text(
        slow_config(
            "slow",
            0.5,
            tmp_path / "slow.log",
            "dynamic_batching { max_queue_delay_microseconds: 1000 }",
        )
    )
    process = ServerProcess(repository)
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{process.grpc_port}")
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    try:
        for i in range(6):
            x = grpcclient.InferInput("X", [1, 1], "FP32")
            x.set_data_from_numpy(np.array([[float(i)]], np.float32))
            client.async_infer(
                "slow",
                [x],
                callback=lambda result, error: results.put((result, error)),
                request_id=str(i),
            )
        time.sleep(0.3)  # all six are in the server
        process.process.send_signal(signal.SIGTERM)
        answers = [results.get(timeout=30) for _ in range(6)]
        assert [e for _, e in answers] == [None] * 6
        values = sorted(float(r.as_numpy("Y")[0, 0]) for r, _ in answers)
        assert values == [2.0 * i for i in range(6)]
        assert process.process.wait(30) == 0
    finally:
        client.close()
        process.stop()
