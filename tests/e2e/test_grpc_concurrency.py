"""64 concurrent gRPC callers: every reply matches its own request, and the server's statistics
count each request once.

Unary calls come from 64 threads over 4 channels; streams are 64 bidirectional
``ModelStreamInfer`` streams at once, each with several requests in flight. Each request carries
inputs unique to it, so a reply sent to the wrong caller, or an input mixed into another
request's batch row, shows as a wrong sum or difference.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from accelserve.protocol import grpc_service_pb2 as pb
from tests.conftest import ServerProcess

SERVICE = "/inference.GRPCInferenceService/"
CALLERS = 64
PER_CALLER = 12


@pytest.fixture(scope="module")
def server(simple_repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(simple_repository)
    yield process
    process.stop()


def _request(caller: int, k: int) -> tuple[pb.ModelInferRequest, np.ndarray, np.ndarray]:
    a = np.arange(16, dtype=np.int32) + 1000 * caller + 16 * k
    b = np.full(16, caller * 7 - k, dtype=np.int32)
    message = pb.ModelInferRequest(model_name="simple", id=f"{caller}-{k}")
    for name, data in (("INPUT0", a), ("INPUT1", b)):
        message.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        message.raw_input_contents.append(data.tobytes())
    return message, a, b


def _check(reply: pb.ModelInferResponse, caller: int, k: int) -> None:
    _, a, b = _request(caller, k)
    assert reply.id == f"{caller}-{k}"
    outputs = dict(zip((o.name for o in reply.outputs), reply.raw_output_contents, strict=True))
    np.testing.assert_array_equal(np.frombuffer(outputs["OUTPUT0"], np.int32), a + b)
    np.testing.assert_array_equal(np.frombuffer(outputs["OUTPUT1"], np.int32), a - b)


def _success_count(server: ServerProcess) -> int:
    stats = httpx.get(f"{server.base}/v2/models/simple/stats", timeout=30).json()
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])


def _channels(server: ServerProcess, count: int) -> list[grpc.Channel]:
    # Separate channels need distinct arguments, or grpc shares one connection between them.
    return [
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=[("test.channel", i)])
        for i in range(count)
    ]


def test_64_concurrent_unary_callers(server: ServerProcess) -> None:
    before = _success_count(server)
    channels = _channels(server, 4)
    start = threading.Barrier(CALLERS)

    def caller(i: int) -> int:
        infer = channels[i % len(channels)].unary_unary(
            SERVICE + "ModelInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        start.wait(timeout=60)  # all 64 in flight together
        for k in range(PER_CALLER):
            _check(infer(_request(i, k)[0], timeout=60), i, k)
        return PER_CALLER

    try:
        with cf.ThreadPoolExecutor(CALLERS) as pool:
            done = sum(pool.map(caller, range(CALLERS)))
    finally:
        for channel in channels:
            channel.close()
    assert done == CALLERS * PER_CALLER
    assert _success_count(server) - before == CALLERS * PER_CALLER


def test_64_concurrent_streams(server: ServerProcess) -> None:
    before = _success_count(server)
    channels = _channels(server, 4)
    start = threading.Barrier(CALLERS)

    def stream(i: int) -> int:
        call = channels[i % len(channels)].stream_stream(
            SERVICE + "ModelStreamInfer",
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        start.wait(timeout=60)
        requests = (_request(i, k)[0] for k in range(PER_CALLER))  # all sent before any reply
        seen = set()
        for answer in call(requests, timeout=60):
            assert answer.error_message == ""
            caller, k = map(int, answer.infer_response.id.split("-"))
            assert caller == i and k not in seen
            _check(answer.infer_response, caller, k)
            seen.add(k)
        assert seen == set(range(PER_CALLER))
        return len(seen)

    try:
        with cf.ThreadPoolExecutor(CALLERS) as pool:
            done = sum(pool.map(stream, range(CALLERS)))
    finally:
        for channel in channels:
            channel.close()
    assert done == CALLERS * PER_CALLER
    assert _success_count(server) - before == CALLERS * PER_CALLER
