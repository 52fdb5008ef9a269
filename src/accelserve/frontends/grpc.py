"""KServe V2 gRPC frontend with Triton's extensions, on ``grpc.aio``.

The methods are registered under Triton's wire name, ``inference.GRPCInferenceService``, so
``tritonclient.grpc`` and other clients generated from Triton's or KServe's ``.proto`` work
unchanged; the messages are accelserve's own (``protocol/grpc_service.proto``, same field
numbers, a different protobuf package so both can live in one process).

Handlers take and return raw bytes and parse with the generated classes themselves: a
malformed message is then the client's INVALID_ARGUMENT rather than grpc's INTERNAL, at no cost
(the same C parser runs either way). Every error a client sees is an ``AccelServeError``'s text
with its status code (the same texts as HTTP), or "internal server error": never a traceback.

Why grpc.aio on the server's own event loop (measured on the 2-core machine, `simple`, 16
streams): decoding and encoding a request cost about 10 us, but grpc.aio itself costs about
80 us of event-loop CPU per RPC even for a server that returns a canned reply (the floor in
benchmarks/server/bench_grpc.py). grpcio's thread-pool server bridged to the loop with
``run_coroutine_threadsafe`` was slower still (about half the throughput: the GIL hand-offs cost
more than they save), so the data plane, the batcher and the RPCs share one loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from accelserve.codecs.v2 import DecodedRequest
from accelserve.codecs.v2_grpc import decode_infer_request, encode_infer_response
from accelserve.codecs.v2_shared_memory import read_shared_inputs, write_shared_outputs
from accelserve.dataplane import DataPlane
from accelserve.errors import (
    AccelServeError,
    InvalidArgumentError,
    UnavailableError,
)
from accelserve.frontends.errors import GRPC_STATUS, bearer_token
from accelserve.frontends.grpc_shared_memory import shared_memory_methods
from accelserve.frontends.tfserving_grpc import TFServingGrpc
from accelserve.protocol import grpc_service_pb2 as pb
from accelserve.types import StreamResponse

log = logging.getLogger("accelserve.grpc")

SERVICE = "inference.GRPCInferenceService"
_STATUS = {code: grpc.StatusCode[name] for code, name in GRPC_STATUS.items()}
INTERNAL_ERROR = "internal server error"
GRACE_SECONDS = 60.0  # how long stop() lets in-flight RPCs finish

Context: TypeAlias = Any  # grpc.aio.ServicerContext (grpcio ships no type hints)
Handler = Callable[[Any, Context], Awaitable[Message]]


class GrpcFrontend:
    """The RPCs, each a thin adapter from messages to one data-plane call."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def method_handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        unary: dict[str, tuple[type[Message], Handler]] = {
            "ServerLive": (pb.ServerLiveRequest, self.server_live),
            "ServerReady": (pb.ServerReadyRequest, self.server_ready),
            "ModelReady": (pb.ModelReadyRequest, self.model_ready),
            "ServerMetadata": (pb.ServerMetadataRequest, self.server_metadata),
            "ModelMetadata": (pb.ModelMetadataRequest, self.model_metadata),
            "ModelConfig": (pb.ModelConfigRequest, self.model_config),
            "ModelStatistics": (pb.ModelStatisticsRequest, self.model_statistics),
            "RepositoryIndex": (pb.RepositoryIndexRequest, self.repository_index),
            "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, self.repository_load),
            "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, self.repository_unload),
        }
        unary.update(shared_memory_methods(self.dataplane.shared_memory))
        handlers = {name: _unary(kind, fn) for name, (kind, fn) in unary.items()}
        handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(self.model_infer)
        handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
            self.model_stream_infer
        )
        return handlers

    # -- inference (the hot path: no wrapper layer) -------------------------------------------

    async def model_infer(self, data: bytes, context: Context) -> bytes:
        try:
            payload: bytes = (await self._infer(data)).SerializeToString()  # protobuf is untyped
            return payload
        except AccelServeError as exc:
            await context.abort(_STATUS.get(exc.code, grpc.StatusCode.INTERNAL), exc.message)
        except Exception:
            log.exception("unhandled error in ModelInfer")
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR)
        raise AssertionError("unreachable: abort raises")

    async def _infer(self, data: bytes) -> pb.ModelInferResponse:
        message, request = self._decode(data)
        name = message.model_name
        response = await self.dataplane.infer(name, message.model_version, request)
        if any(r.shared is not None for r in request.outputs):
            write_shared_outputs(
                name, response.outputs, request.outputs, self.dataplane.shared_memory
            )
        return encode_infer_response(
            name, response.model_version, response.id, response.outputs, request.outputs
        )

    def _decode(self, data: bytes) -> tuple[pb.ModelInferRequest, DecodedRequest]:
        try:
            message = _parse(pb.ModelInferRequest, data)
        except AccelServeError as exc:
            self.dataplane.record_failure("", "", exc)  # names no model: counted server-wide
            raise
        try:
            request = decode_infer_request(message)
            if request.shared_inputs:
                read_shared_inputs(request, self.dataplane.shared_memory)
        except AccelServeError as exc:
            self.dataplane.record_failure(message.model_name, message.model_version, exc)
            raise
        return message, request

    async def model_stream_infer(self, requests: AsyncIterator[bytes], context: Context) -> None:
        """Bidirectional stream: each request is answered as its responses come (match them
        by ``id``): a decoupled model's zero or more, any other model's one. Every response
        carries Triton's ``triton_final_response`` parameter; the final flag alone (a decoupled
        model's last word) is sent as an empty response only when the request asks with
        ``triton_enable_empty_final_response`` (tritonclient's ``enable_empty_final_response``).
        A failed request yields a response with ``error_message`` and the stream goes on, as
        Triton does. A stream cancelled by the client cancels its requests (the model sees
        ``is_cancelled()``)."""
        lock = asyncio.Lock()
        tasks: set[asyncio.Task[None]] = set()

        async def write(payload: pb.ModelStreamInferResponse) -> None:
            async with lock:  # one write at a time on the stream
                await context.write(payload.SerializeToString())

        async def answer(data: bytes) -> None:
            request_id = ""
            try:
                message, request = self._decode(data)
                request_id = message.id
                empty_final = request.parameters.get("triton_enable_empty_final_response") is True
                name = message.model_name
                async for part in self.dataplane.infer_stream(name, message.model_version, request):
                    if part.outputs is None and part.error is None and not empty_final:
                        continue
                    await write(_stream_response(name, request, part))
            except AccelServeError as exc:
                await write(_stream_error(exc.message, request_id))
            except Exception:
                log.exception("unhandled error in ModelStreamInfer")
                await write(_stream_error(INTERNAL_ERROR, request_id))

        try:
            async for data in requests:
                task = asyncio.create_task(answer(data))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    # -- health and metadata ------------------------------------------------------------------

    async def server_live(self, request: pb.ServerLiveRequest, context: Context) -> Message:
        return pb.ServerLiveResponse(live=self.dataplane.live())

    async def server_ready(self, request: pb.ServerReadyRequest, context: Context) -> Message:
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    async def model_ready(self, request: pb.ModelReadyRequest, context: Context) -> Message:
        ready = self.dataplane.known_model_ready(request.name, request.version)
        return pb.ModelReadyResponse(ready=ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: Context) -> Message:
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: Context) -> Message:
        data = self.dataplane.model_metadata(request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=data["name"],
            versions=data["versions"],
            platform=data["platform"],
            inputs=[tensor(**spec) for spec in data["inputs"]],
            outputs=[tensor(**spec) for spec in data["outputs"]],
        )

    async def model_config(self, request: pb.ModelConfigRequest, context: Context) -> Message:
        model = self.dataplane.model(request.name, request.version)
        return pb.ModelConfigResponse(config=model.config)

    async def model_statistics(
        self, request: pb.ModelStatisticsRequest, context: Context
    ) -> Message:
        data = self.dataplane.statistics(request.name, request.version)
        # accelserve's own fields (isolation_retry_count) have no place in Triton's message
        return json_format.ParseDict(data, pb.ModelStatisticsResponse(), ignore_unknown_fields=True)

    # -- repository control -------------------------------------------------------------------

    async def repository_index(
        self, request: pb.RepositoryIndexRequest, context: Context
    ) -> Message:
        rows = self.dataplane.repository_index(request.ready)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[index(**row) for row in rows])

    async def repository_load(
        self, request: pb.RepositoryModelLoadRequest, context: Context
    ) -> Message:
        key = _bearer(context)
        self.dataplane.authorize_control(key)  # before anything else is looked at
        parameters = {
            name: getattr(value, value.WhichOneof("parameter_choice") or "bytes_param")
            for name, value in request.parameters.items()
        }
        await self.dataplane.load_model(request.model_name, key, parameters)
        return pb.RepositoryModelLoadResponse()

    async def repository_unload(
        self, request: pb.RepositoryModelUnloadRequest, context: Context
    ) -> Message:
        key = _bearer(context)
        self.dataplane.authorize_control(key)
        _no_parameters(request, "unload")
        await self.dataplane.unload_model(request.model_name, key)
        return pb.RepositoryModelUnloadResponse()


def _stream_response(
    name: str, request: DecodedRequest, part: StreamResponse
) -> pb.ModelStreamInferResponse:
    if part.error is not None:
        payload = _stream_error(str(getattr(part.error, "message", part.error)), part.id)
        response = payload.infer_response
    else:
        payload = pb.ModelStreamInferResponse()
        response = payload.infer_response
        if part.outputs is None:  # the final flag alone
            response.model_name, response.model_version, response.id = (
                name,
                part.model_version,
                part.id,
            )
        else:
            response.CopyFrom(
                encode_infer_response(
                    name, part.model_version, part.id, part.outputs, request.outputs
                )
            )
    response.parameters["triton_final_response"].bool_param = part.final
    return payload


def _stream_error(message: str, request_id: str) -> pb.ModelStreamInferResponse:
    payload = pb.ModelStreamInferResponse(error_message=message)
    payload.infer_response.id = request_id
    payload.infer_response.parameters["triton_final_response"].bool_param = True
    return payload


def _unary(kind: type[Message], fn: Handler) -> grpc.RpcMethodHandler:
    async def handler(data: bytes, context: Context) -> bytes:
        try:
            payload: bytes = (await fn(_parse(kind, data), context)).SerializeToString()
            return payload
        except AccelServeError as exc:
            await context.abort(_STATUS.get(exc.code, grpc.StatusCode.INTERNAL), exc.message)
        except Exception:
            log.exception("unhandled error in %s", kind.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR)
        raise AssertionError("unreachable: abort raises")

    return grpc.unary_unary_rpc_method_handler(handler)


def _parse(kind: type[Message], data: bytes) -> Any:
    try:
        return kind.FromString(data)
    except DecodeError as exc:
        raise InvalidArgumentError(
            f"malformed {kind.__name__} protobuf message ({len(data)} bytes): {exc}"
        ) from None


def _bearer(context: Context) -> str | None:
    """The key of the first ``authorization: Bearer <key>`` metadata entry (HTTP's rule)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return bearer_token(value)
    return None


def _no_parameters(request: pb.RepositoryModelUnloadRequest, action: str) -> None:
    # tritonclient always sends unload_dependents (false by default): accelserve never
    # unloads other models, which is what false asks for.
    params = request.parameters
    unsupported = sorted(
        key
        for key, value in params.items()
        if not (
            key == "unload_dependents"
            and value.WhichOneof("parameter_choice") == "bool_param"
            and not value.bool_param
        )
    )
    if unsupported:
        raise InvalidArgumentError(
            f"model {action} parameters ({', '.join(unsupported)}) are not supported; expected "
            f"none (accelserve {action}s '{request.model_name}' as it is in the model "
            f"repository, without dependents)"
        )


class GrpcServer:
    """The running gRPC frontend; ``stop()`` lets in-flight RPCs finish."""

    def __init__(self, server: grpc.aio.Server, port: int) -> None:
        self.server = server
        self.port = port

    async def stop(self) -> None:
        await self.server.stop(GRACE_SECONDS)


async def start_grpc_server(
    dataplane: DataPlane, host: str, port: int, max_message_bytes: int
) -> GrpcServer:
    if max_message_bytes < 1 or max_message_bytes > 2**31 - 1:
        raise ValueError(
            f"max message bytes: expected 1..{2**31 - 1} (gRPC's limit); received "
            f"{max_message_bytes}"
        )
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port in use is an error, not a silent second server
        ]
    )
    services = {
        SERVICE: GrpcFrontend(dataplane).method_handlers(),
        **TFServingGrpc(dataplane).services(_unary),  # TF Serving's API beside V2
    }
    for name, handlers in services.items():
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
        server.add_registered_method_handlers(name, handlers)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise UnavailableError(
            f"the gRPC frontend cannot listen on {address} (is the port in use?); choose another "
            f"--grpc-port, or 0 to disable gRPC"
        )
    await server.start()
    log.info("gRPC frontend listening on %s", address)
    return GrpcServer(server, bound)
