"""The gRPC floor: a server that parses each ModelInferRequest for Triton's `simple` and answers
a canned reply, on grpc.aio (uvloop) or grpcio's thread-pool server. bench_grpc.py and
bench_grpc_floor.py run it in processes of their own as the ceiling of a Python gRPC layout.
"""

from __future__ import annotations

from typing import Any


def floor_server(port: int, sync: bool = False, reuse_port: bool = False) -> None:
    """A grpc.aio server (or with ``sync``, grpcio's thread-pool server) that does the least a
    V2 server can: parse, answer a canned reply. ``reuse_port``: share the port with other
    processes (SO_REUSEPORT), as bench_grpc_floor.py's multi-process floors do."""
    import concurrent.futures as cf

    import grpc
    import numpy as np
    import uvloop

    from accelserve.protocol import grpc_service_pb2 as pb
    from accelserve.protocol.model_config_pb2 import DataType, ModelConfig

    tensor = pb.ModelMetadataResponse.TensorMetadata
    metadata = pb.ModelMetadataResponse(
        name="simple",
        versions=["1"],
        platform="floor",
        inputs=[tensor(name=f"INPUT{i}", datatype="INT32", shape=[-1, 16]) for i in (0, 1)],
        outputs=[tensor(name=f"OUTPUT{i}", datatype="INT32", shape=[-1, 16]) for i in (0, 1)],
    ).SerializeToString()
    config = ModelConfig(name="simple", max_batch_size=8)
    for i in (0, 1):
        config.input.add(name=f"INPUT{i}", data_type=DataType.TYPE_INT32, dims=[16])
        config.output.add(name=f"OUTPUT{i}", data_type=DataType.TYPE_INT32, dims=[16])
    config_reply = pb.ModelConfigResponse(config=config).SerializeToString()
    reply = pb.ModelInferResponse(model_name="simple", model_version="1")
    for i in (0, 1):
        reply.outputs.add(name=f"OUTPUT{i}", datatype="INT32", shape=[1, 16])
        reply.raw_output_contents.append(np.zeros(16, np.int32).tobytes())
    canned = reply.SerializeToString()

    async def infer(data: bytes, context: object) -> bytes:
        pb.ModelInferRequest.FromString(data)
        return canned

    def fixed(reply: bytes) -> Any:
        async def handler(data: bytes, context: object) -> bytes:
            return reply

        return handler

    def sync_handlers() -> dict[str, Any]:
        def sync_infer(data: bytes, context: object) -> bytes:
            pb.ModelInferRequest.FromString(data)
            return canned

        def sync_fixed(reply: bytes) -> Any:
            return lambda data, context: reply

        return {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(sync_infer),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(sync_fixed(metadata)),
            "ModelConfig": grpc.unary_unary_rpc_method_handler(sync_fixed(config_reply)),
        }

    service = "inference.GRPCInferenceService"
    if sync:  # as many workers as a thread-pool layout would need for 64+ streams
        server = grpc.server(
            cf.ThreadPoolExecutor(128), options=[("grpc.so_reuseport", int(reuse_port))]
        )
        handlers = sync_handlers()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
        handlers = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(fixed(metadata)),
            "ModelConfig": grpc.unary_unary_rpc_method_handler(fixed(config_reply)),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())
