"""The V2 gRPC frontend's methods and status mapping in process: each registered handler called
with serialized bytes and a fake context that records ``abort(code, message)`` (no channel, no
server process), on a data plane over models in a dict and a fake runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message

from accelserve.dataplane import DataPlane
from accelserve.errors import (
    AccelServeError,
    ConfigError,
    InvalidArgumentError,
    ModelExecutionError,
    ModelInputError,
    ModelNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QueueFullError,
    QueueTimeoutError,
    ServerFaultError,
    UnauthenticatedError,
    UnavailableError,
)
from accelserve.frontends.grpc import GrpcFrontend
from accelserve.protocol import grpc_service_pb2 as pb
from tests.unit.fake_models import (
    API_KEY,
    FakeRegistry,
    runner_of,
    simple_dataplane,
    simple_version,
)

Status = grpc.StatusCode
ROW = [1, 2, 3, 4]


class Aborted(Exception):
    """What the fake context's abort raises (grpc.aio raises its own AbortError)."""


class FakeContext:
    def __init__(self, metadata: tuple[tuple[str, str | bytes], ...] = ()) -> None:
        self.metadata = metadata
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.written: list[bytes] = []

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        self.aborted = (code, message)
        raise Aborted

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self.metadata

    async def write(self, data: bytes) -> None:
        self.written.append(data)


def call(
    method: str,
    request: Message | bytes,
    dataplane: DataPlane | None = None,
    metadata: tuple[tuple[str, str | bytes], ...] = (),
) -> tuple[bytes | None, FakeContext]:
    """(response bytes, context) of a unary method; response None when it aborted."""
    handler = GrpcFrontend(dataplane or simple_dataplane()).method_handlers()[method]
    context = FakeContext(metadata)
    data = request if isinstance(request, bytes) else request.SerializeToString()
    try:
        return asyncio.run(handler.unary_unary(data, context)), context
    except Aborted:
        return None, context


def aborted_with(method: str, request: Message | bytes, **kwargs: Any) -> tuple[Status, str]:
    response, context = call(method, request, **kwargs)
    assert response is None and context.aborted is not None
    return context.aborted


def infer_request(**fields: Any) -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor
    message = pb.ModelInferRequest(
        model_name="simple",
        inputs=[
            tensor(name=name, datatype="INT32", shape=[1, 4], contents={"int_contents": ROW})
            for name in ("INPUT0", "INPUT1")
        ],
    )
    for key, value in fields.items():
        setattr(message, key, value)
    return message


# ---------------------------------------------------------------------- health and metadata


def test_health() -> None:
    dataplane = simple_dataplane()
    live, _ = call("ServerLive", pb.ServerLiveRequest(), dataplane)
    ready, _ = call("ServerReady", pb.ServerReadyRequest(), dataplane)
    assert pb.ServerLiveResponse.FromString(live or b"").live
    assert pb.ServerReadyResponse.FromString(ready or b"").ready
    dataplane.stopping = True
    ready, _ = call("ServerReady", pb.ServerReadyRequest(), dataplane)
    assert not pb.ServerReadyResponse.FromString(ready or b"").ready


@pytest.mark.parametrize(
    ("name", "version", "ready"),
    [("simple", "", True), ("simple", "1", True), ("simple", "9", False), ("broken", "", False)],
)
def test_model_ready(name: str, version: str, ready: bool) -> None:
    response, _ = call("ModelReady", pb.ModelReadyRequest(name=name, version=version))
    assert pb.ModelReadyResponse.FromString(response or b"").ready is ready


def test_model_ready_of_an_unknown_model_is_not_found() -> None:
    code, message = aborted_with("ModelReady", pb.ModelReadyRequest(name="nope"))
    assert code == Status.NOT_FOUND and "'nope' is not found" in message


def test_server_and_model_metadata() -> None:
    response, _ = call("ServerMetadata", pb.ServerMetadataRequest())
    server = pb.ServerMetadataResponse.FromString(response or b"")
    assert server.name == "accelserve" and "statistics" in server.extensions
    response, _ = call("ModelMetadata", pb.ModelMetadataRequest(name="simple"))
    model = pb.ModelMetadataResponse.FromString(response or b"")
    assert list(model.versions) == ["1", "2"] and model.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("INPUT0", "INT32", [-1, 4]),
        ("INPUT1", "INT32", [-1, 4]),
    ]


def test_model_config_and_statistics() -> None:
    response, _ = call("ModelConfig", pb.ModelConfigRequest(name="simple", version="1"))
    config = pb.ModelConfigResponse.FromString(response or b"").config
    assert (config.name, config.max_batch_size) == ("simple", 8)
    dataplane = simple_dataplane()
    dataplane.model("simple", "2").stats.inference_count = 4
    request = pb.ModelStatisticsRequest(name="simple", version="2")
    response, _ = call("ModelStatistics", request, dataplane)
    (stats,) = pb.ModelStatisticsResponse.FromString(response or b"").model_stats
    assert (stats.name, stats.version, stats.inference_count) == ("simple", "2", 4)
    response, _ = call("ModelStatistics", pb.ModelStatisticsRequest())
    every = pb.ModelStatisticsResponse.FromString(response or b"").model_stats
    assert [s.version for s in every] == ["1", "2"]


def test_repository_index() -> None:
    response, _ = call("RepositoryIndex", pb.RepositoryIndexRequest(ready=True))
    rows = pb.RepositoryIndexResponse.FromString(response or b"").models
    assert [(r.name, r.version, r.state) for r in rows] == [
        ("simple", "1", "READY"),
        ("simple", "2", "READY"),
    ]


@pytest.mark.parametrize(
    ("method", "request_message", "status"),
    [
        ("ModelMetadata", pb.ModelMetadataRequest(name="nope"), Status.NOT_FOUND),
        ("ModelMetadata", pb.ModelMetadataRequest(name="simple", version="9"), Status.NOT_FOUND),
        ("ModelConfig", pb.ModelConfigRequest(name="broken"), Status.UNAVAILABLE),
        ("ModelStatistics", pb.ModelStatisticsRequest(name="nope"), Status.NOT_FOUND),
        ("ModelInfer", infer_request(model_name="nope"), Status.NOT_FOUND),
        ("ModelInfer", infer_request(model_name="broken"), Status.UNAVAILABLE),
        ("ModelInfer", infer_request(model_version="9"), Status.NOT_FOUND),
    ],
)
def test_lookup_errors(method: str, request_message: Message, status: Status) -> None:
    assert aborted_with(method, request_message)[0] == status


@pytest.mark.parametrize("method", ["ModelReady", "ModelInfer", "RepositoryModelLoad"])
def test_malformed_message_is_invalid_argument(method: str) -> None:
    code, message = aborted_with(method, b"\xff")
    assert code == Status.INVALID_ARGUMENT and "malformed" in message


# ---------------------------------------------------------------------------------- infer


def test_model_infer() -> None:
    dataplane = simple_dataplane()
    request = infer_request(id="r9", model_version="1")
    request.outputs.add(name="OUTPUT0")
    response, _ = call("ModelInfer", request, dataplane)
    message = pb.ModelInferResponse.FromString(response or b"")
    assert (message.model_name, message.model_version, message.id) == ("simple", "1", "r9")
    assert [(o.name, o.datatype, list(o.shape)) for o in message.outputs] == [
        ("OUTPUT0", "INT32", [1, 4])
    ]
    assert np.frombuffer(message.raw_output_contents[0], np.int32).tolist() == [2, 4, 6, 8]
    assert len(runner_of(dataplane, "1").requests) == 1


def test_model_infer_validates_before_the_runner() -> None:
    dataplane = simple_dataplane()
    request = infer_request()
    del request.inputs[1]
    code, message = aborted_with("ModelInfer", request, dataplane=dataplane)
    assert code == Status.INVALID_ARGUMENT and "INPUT1" in message
    assert not runner_of(dataplane).requests


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidArgumentError("bad"), Status.INVALID_ARGUMENT),
        (ConfigError("bad config"), Status.INVALID_ARGUMENT),
        (UnauthenticatedError("who"), Status.UNAUTHENTICATED),
        (PermissionDeniedError("no"), Status.PERMISSION_DENIED),
        (ModelNotFoundError("gone"), Status.NOT_FOUND),
        (PayloadTooLargeError("too big"), Status.RESOURCE_EXHAUSTED),
        (QueueFullError("queue full"), Status.UNAVAILABLE),
        (QueueTimeoutError("waited"), Status.UNAVAILABLE),
        (UnavailableError("later"), Status.UNAVAILABLE),
        (ModelExecutionError("backend failed"), Status.INTERNAL),
        (ModelInputError("input 'ids' holds 9"), Status.INVALID_ARGUMENT),
        (ServerFaultError("out of memory"), Status.INTERNAL),
        (RuntimeError("secret /opt/path"), Status.INTERNAL),
    ],
)
def test_runner_errors_map_to_status(error: Exception, status: Status) -> None:
    dataplane = simple_dataplane()
    runner_of(dataplane).error = error
    code, message = aborted_with("ModelInfer", infer_request(), dataplane=dataplane)
    expected = error.message if isinstance(error, AccelServeError) else "internal server error"
    assert (code, message) == (status, expected)


def test_stream_infer_answers_each_request_and_goes_on_after_errors() -> None:
    dataplane = simple_dataplane()
    frontend = GrpcFrontend(dataplane)
    handler = frontend.method_handlers()["ModelStreamInfer"].stream_stream
    context = FakeContext()

    async def requests() -> AsyncIterator[bytes]:
        yield infer_request(id="a").SerializeToString()
        yield infer_request(id="b", model_name="nope").SerializeToString()
        yield b"\xff"

    asyncio.run(handler(requests(), context))
    answers = [pb.ModelStreamInferResponse.FromString(data) for data in context.written]
    assert len(answers) == 3 and context.aborted is None
    ok = [a for a in answers if not a.error_message]
    errors = sorted(a.error_message for a in answers if a.error_message)
    assert [a.infer_response.id for a in ok] == ["a"]
    assert "'nope' is not found" in errors[0] and "malformed" in errors[1]


# ---------------------------------------------------------------------------- model control


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def test_model_control_statuses() -> None:
    load = pb.RepositoryModelLoadRequest(model_name="extra")
    code, _ = aborted_with("RepositoryModelLoad", load, metadata=bearer(API_KEY))
    assert code == Status.PERMISSION_DENIED  # control is off
    dataplane = simple_dataplane(model_control=True)
    assert aborted_with("RepositoryModelLoad", load, dataplane=dataplane)[0] == (
        Status.UNAUTHENTICATED
    )
    code, _ = aborted_with("RepositoryModelLoad", load, dataplane=dataplane, metadata=bearer("x"))
    assert code == Status.UNAUTHENTICATED
    code, message = aborted_with(
        "RepositoryModelLoad", load, dataplane=dataplane, metadata=bearer(API_KEY)
    )
    assert code == Status.INVALID_ARGUMENT and "failed to load 'extra'" in message
    registry = dataplane.repository
    assert isinstance(registry, FakeRegistry)
    registry.loadable["extra"] = [simple_version("1", name="extra")]
    response, _ = call("RepositoryModelLoad", load, dataplane, bytes_key(API_KEY))
    assert response == b"" and dataplane.model_ready("extra")
    unload = pb.RepositoryModelUnloadRequest(model_name="extra")
    response, _ = call("RepositoryModelUnload", unload, dataplane, bearer(API_KEY))
    assert response == b"" and not dataplane.model_ready("extra")


def bytes_key(key: str) -> tuple[tuple[str, bytes], ...]:
    return (("authorization", f"bearer {key}".encode()),)  # any case, str or bytes


def test_load_parameters_are_checked_after_the_key_check() -> None:
    dataplane = simple_dataplane(model_control=True)
    load = pb.RepositoryModelLoadRequest(model_name="simple")
    load.parameters["config"].string_param = "{not json"
    assert aborted_with("RepositoryModelLoad", load, dataplane=dataplane)[0] == (
        Status.UNAUTHENTICATED
    )
    code, message = aborted_with(
        "RepositoryModelLoad", load, dataplane=dataplane, metadata=bearer(API_KEY)
    )
    assert code == Status.INVALID_ARGUMENT
    assert message.startswith("failed to load 'simple': parameter 'config' is not a model")
    # a valid override reaches the repository, parsed, with the uploaded file as bytes
    load.parameters["config"].string_param = '{"max_batch_size": 2}'
    load.parameters["file:1/model.onnx"].bytes_param = b"onnx bytes"
    aborted_with("RepositoryModelLoad", load, dataplane=dataplane, metadata=bearer(API_KEY))
    override = dataplane.repository.overrides["simple"]  # type: ignore[attr-defined]
    assert override is not None and override.config.max_batch_size == 2
    assert override.config.name == "simple"
    assert override.files == {"1/model.onnx": b"onnx bytes"}
    unload = pb.RepositoryModelUnloadRequest(model_name="simple")
    unload.parameters["unload_dependents"].bool_param = False  # what tritonclient sends
    response, _ = call("RepositoryModelUnload", unload, dataplane, bearer(API_KEY))
    assert response == b""
