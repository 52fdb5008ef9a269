"""Both V2 decoders return one request type: the data plane's InferRequest, whose outputs carry
the per-output options, with priority and timeout read from the parameters."""

from __future__ import annotations

import pytest
from v2_codec_helpers import binary_body, json_body, sample, tensor_json

from accelserve.codecs import v2_http_cache
from accelserve.codecs.v2 import DecodedRequest, RequestedOutput
from accelserve.codecs.v2_grpc import decode_infer_request as decode_grpc
from accelserve.codecs.v2_http_decode import decode_infer_request as decode_http
from accelserve.errors import InvalidArgumentError
from accelserve.protocol import grpc_service_pb2 as pb
from accelserve.types import InferRequest


def _grpc_message(**parameters: int) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="m", id="r1")
    message.inputs.add(name="x", datatype="INT32", shape=[1, 2]).contents.int_contents.extend(
        [1, 2]
    )
    message.outputs.add(name="y")
    for key, value in parameters.items():
        message.parameters[key].int64_param = value
    return message


def test_http_and_grpc_decode_to_the_same_request() -> None:
    body = json_body(
        [tensor_json("x", "INT32", sample("INT32", (1, 2)))],
        id="r1",
        parameters={"priority": 2, "timeout": 300},
        outputs=[{"name": "y"}],
    )
    from_http = decode_http(body, None)
    from_grpc = decode_grpc(_grpc_message(priority=2, timeout=300))
    for decoded in (from_http, from_grpc):
        assert type(decoded) is DecodedRequest and isinstance(decoded, InferRequest)
        assert (decoded.id, decoded.priority, decoded.timeout_us) == ("r1", 2, 300)
        assert decoded.outputs == [RequestedOutput("y", None)]
        assert decoded.binary_data_output is False
    assert from_http.parameters == from_grpc.parameters == {"priority": 2, "timeout": 300}


@pytest.mark.parametrize("value", [-1, "3", 1.5, True])
def test_bad_priority_is_refused_by_the_http_decoder(value: object) -> None:
    body = json_body([], parameters={"priority": value})
    with pytest.raises(InvalidArgumentError) as info:
        decode_http(body, None)
    assert str(info.value) == (
        f"parameter 'priority': expected a non-negative integer; received {value!r}"
    )


def test_cached_binary_requests_keep_priority_and_timeout() -> None:
    body, length = binary_body(
        [("x", "FP32", sample("FP32"))], parameters={"priority": 1, "timeout": 9}
    )
    for _ in range(2):  # the second comes from the cache
        decoded = v2_http_cache.decode_request(body, length)
        assert (decoded.priority, decoded.timeout_us) == (1, 9)
    v2_http_cache._requests.clear()


def test_requested_output_is_its_name_with_options() -> None:
    binary = RequestedOutput("y", True)
    assert binary == "y" and "y" in [binary] and {"y": 1}[binary] == 1
    assert binary.name == "y" and type(binary.name) is str
    assert binary != RequestedOutput("y", False) and binary == RequestedOutput("y", True)
    assert hash(binary) == hash("y")
    assert repr(binary) == "RequestedOutput('y', binary=True)"
