"""Triton's shared-memory extension over gRPC: the System/CudaSharedMemory{Status,Register,
Unregister} RPCs, each a thin adapter over the data plane's ``SharedMemoryRegistry`` (CUDA
shared memory on a server without a GPU: registering is INVALID_ARGUMENT, the status lists no
region).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from google.protobuf.message import Message

from accelserve.protocol import grpc_service_pb2 as pb
from accelserve.shared_memory import SharedMemoryRegistry

Method = Callable[[Any, Any], Awaitable[Message]]


def shared_memory_methods(
    registry: SharedMemoryRegistry,
) -> dict[str, tuple[type[Message], Method]]:
    """RPC name -> (request message class, handler), for ``GrpcFrontend``'s unary table."""

    async def system_status(request: pb.SystemSharedMemoryStatusRequest, context: Any) -> Message:
        response = pb.SystemSharedMemoryStatusResponse()
        for region in registry.system_status(request.name):
            response.regions[str(region["name"])].CopyFrom(
                pb.SystemSharedMemoryStatusResponse.RegionStatus(**region)  # type: ignore[arg-type]
            )
        return response

    async def system_register(
        request: pb.SystemSharedMemoryRegisterRequest, context: Any
    ) -> Message:
        registry.register_system(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    async def system_unregister(
        request: pb.SystemSharedMemoryUnregisterRequest, context: Any
    ) -> Message:
        registry.unregister_system(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    async def cuda_status(request: pb.CudaSharedMemoryStatusRequest, context: Any) -> Message:
        response = pb.CudaSharedMemoryStatusResponse()
        for region in registry.cuda_status(request.name):
            response.regions[str(region["name"])].CopyFrom(
                pb.CudaSharedMemoryStatusResponse.RegionStatus(**region)  # type: ignore[arg-type]
            )
        return response

    async def cuda_register(request: pb.CudaSharedMemoryRegisterRequest, context: Any) -> Message:
        # opening an IPC handle is a driver call: off the event loop
        await asyncio.to_thread(
            registry.register_cuda,
            request.name,
            request.raw_handle,
            request.device_id,
            request.byte_size,
        )
        return pb.CudaSharedMemoryRegisterResponse()

    async def cuda_unregister(
        request: pb.CudaSharedMemoryUnregisterRequest, context: Any
    ) -> Message:
        registry.unregister_cuda(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    return {
        "SystemSharedMemoryStatus": (pb.SystemSharedMemoryStatusRequest, system_status),
        "SystemSharedMemoryRegister": (pb.SystemSharedMemoryRegisterRequest, system_register),
        "SystemSharedMemoryUnregister": (
            pb.SystemSharedMemoryUnregisterRequest,
            system_unregister,
        ),
        "CudaSharedMemoryStatus": (pb.CudaSharedMemoryStatusRequest, cuda_status),
        "CudaSharedMemoryRegister": (pb.CudaSharedMemoryRegisterRequest, cuda_register),
        "CudaSharedMemoryUnregister": (pb.CudaSharedMemoryUnregisterRequest, cuda_unregister),
    }
