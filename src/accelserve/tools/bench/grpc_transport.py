"""KServe V2 over gRPC (``grpc.aio``), with the messages tritonclient generates from Triton's
``grpc_service.proto``: the same wire contract accelserve's gRPC frontend implements.

Imported only when ``--protocol grpc`` is asked for: grpcio and tritonclient stay optional.

Cost: grpc.aio spends more client CPU per request than the HTTP client (measured against Triton's
`simple` on the 2-core machine: about 65 us at 16 streams and 190 us at 1, against 16 and 35 us
over HTTP), so a gRPC benchmark leaves the server less CPU; it does so equally for every server
it drives, which is why comparisons are made in the same run with the same client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grpc
import numpy as np
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2, service_pb2_grpc

from accelserve.tools.bench.inputs import ModelInfo, tensor_bytes
from accelserve.tools.bench.transport import ERROR_TEXT_LIMIT, LoadgenError

_NOT_THERE = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND)


def _as_dict(message: Any) -> dict[str, Any]:
    # 64-bit fields come back as strings and zero fields are left out: consumers int() with
    # defaults (see ModelInfo.from_server and serverstats.snapshot).
    return dict(MessageToDict(message, preserving_proto_field_name=True))


def _rpc_error(exc: grpc.aio.AioRpcError) -> str:
    return f"gRPC {exc.code().name}: {exc.details()}"[:ERROR_TEXT_LIMIT]


class GrpcSession:
    __slots__ = ("_call", "_requests", "_timeout")

    def __init__(self, call: Any, requests: list[Any], timeout: float) -> None:
        self._call, self._requests, self._timeout = call, requests, timeout

    async def infer(self, index: int) -> str | None:
        try:
            await self._call(self._requests[index], timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            return _rpc_error(exc)
        return None

    def close(self) -> None:
        pass  # the channel is shared and closed by the transport


class GrpcTransport:
    """One HTTP/2 channel shared by every session (gRPC multiplexes the streams)."""

    def __init__(
        self, host: str, port: int, model: str, version: str = "", *, timeout: float = 30.0
    ) -> None:
        self.target = f"{host}:{port}"
        self.model, self.version, self.timeout = model, version, timeout
        self.description = f"grpc://{self.target}"
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._requests: list[Any] = []
        self._info: ModelInfo | None = None

    async def open(self) -> None:
        unlimited = 2**31 - 1
        self._channel = grpc.aio.insecure_channel(
            self.target,
            options=[
                ("grpc.max_send_message_length", unlimited),
                ("grpc.max_receive_message_length", unlimited),
            ],
        )
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def _unary(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _NOT_THERE and method != "ModelMetadata":
                return None
            raise LoadgenError(f"{method} at {self.target}: {_rpc_error(exc)}") from None

    async def metadata(self) -> dict[str, Any]:
        req = service_pb2.ModelMetadataRequest(name=self.model, version=self.version)
        return _as_dict(await self._unary("ModelMetadata", req))

    async def config(self) -> dict[str, Any] | None:
        req = service_pb2.ModelConfigRequest(name=self.model, version=self.version)
        resp = await self._unary("ModelConfig", req)
        if resp is None:
            return None
        config = _as_dict(resp.config)
        config.setdefault("max_batch_size", 0)  # proto3 leaves a zero out
        return config

    async def stats(self) -> dict[str, Any] | None:
        req = service_pb2.ModelStatisticsRequest(name=self.model, version=self.version)
        resp = await self._unary("ModelStatistics", req)
        return None if resp is None else _as_dict(resp)

    def prepare(self, info: ModelInfo, tensors: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._info = info
        dtypes = {s.name: s.datatype for s in info.inputs}
        self._requests = []
        for t in tensors:
            req = service_pb2.ModelInferRequest(model_name=self.model, model_version=self.version)
            for name, array in t.items():
                tensor = req.inputs.add()
                tensor.name, tensor.datatype = name, dtypes[name]
                tensor.shape.extend(array.shape)
                req.raw_input_contents.append(tensor_bytes(array, dtypes[name]))
            self._requests.append(req)

    async def probe(self) -> None:
        try:
            resp = await self._stub.ModelInfer(self._requests[0], timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise LoadgenError(
                f"the server rejected the generated request: {_rpc_error(exc)}"
            ) from None
        names = {o.name for o in resp.outputs}
        missing = sorted(set(self._info.outputs if self._info else ()) - names)
        if missing:
            raise LoadgenError(f"ModelInfer at {self.target}: response lacks outputs {missing}")

    def session(self) -> GrpcSession:
        return GrpcSession(self._stub.ModelInfer, self._requests, self.timeout)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
