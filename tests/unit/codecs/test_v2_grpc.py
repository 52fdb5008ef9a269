"""The gRPC codec against the real client: tritonclient.grpc builds the requests (its own
generated messages, serialized to bytes) and parses our responses, for every datatype."""

from __future__ import annotations

import numpy as np
import pytest
from v2_codec_helpers import DATATYPES, assert_same, raw_bytes, sample

from accelserve.codecs.v2_grpc import CONTENTS_FIELD, decode_infer_request, encode_infer_response
from accelserve.errors import InvalidArgumentError
from accelserve.protocol import grpc_service_pb2 as pb

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import _utils, service_pb2  # noqa: E402


def _tritonclient_request(tensors: list[tuple[str, str, np.ndarray]], **kw: object) -> bytes:
    inputs = []
    for name, datatype, array in tensors:
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    request = _utils._get_inference_request(
        model_name="m",
        inputs=inputs,
        model_version="",
        request_id=kw.get("request_id", ""),
        outputs=kw.get("outputs"),
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=kw.get("priority", 0),
        timeout=kw.get("timeout"),
        parameters=kw.get("parameters"),
    )
    return request.SerializeToString()


def _decode(data: bytes):
    return decode_infer_request(pb.ModelInferRequest.FromString(data))


@pytest.mark.parametrize("datatype", DATATYPES)
def test_decodes_tritonclient_requests(datatype: str) -> None:
    expected = sample(datatype, (2, 3))
    other = sample("INT32", (1, 16), seed=1)
    data = _tritonclient_request(
        [("x", datatype, expected), ("y", "INT32", other)],
        request_id="abc",
        outputs=[grpcclient.InferRequestedOutput("out")],
        priority=3,
        timeout=1000,
        parameters={"tag": "t", "n": 2, "f": 0.5, "b": True},
    )
    request = _decode(data)
    assert_same(request.inputs["x"], expected)
    assert_same(request.inputs["y"], other)
    assert (request.id, request.outputs, request.priority, request.timeout_us) == (
        "abc",
        ["out"],
        3,
        1000,
    )
    assert request.parameters == {
        "tag": "t",
        "n": 2,
        "f": 0.5,
        "b": True,
        "priority": 3,
        "timeout": 1000,
    }


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d in CONTENTS_FIELD])
def test_decodes_typed_contents(datatype: str) -> None:
    expected = sample(datatype, (2, 3), seed=2)
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=[2, 3])
    getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(expected.reshape(-1).tolist())
    assert_same(decode_infer_request(request).inputs["x"], expected)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_tritonclient_reads_our_responses(datatype: str) -> None:
    array = sample(datatype, (3, 2), seed=3)
    ints = sample("INT64", (4,), seed=4)
    message = encode_infer_response("m", "1", "id7", {"a": array, "b": ints})
    theirs = service_pb2.ModelInferResponse.FromString(message.SerializeToString())
    result = grpcclient.InferResult(theirs)
    assert (theirs.model_name, theirs.model_version, theirs.id) == ("m", "1", "id7")
    assert_same(result.as_numpy("a"), array)
    assert_same(result.as_numpy("b"), ints)
    assert list(message.raw_output_contents) == [raw_bytes(array), raw_bytes(ints)]


def test_requested_outputs_and_order() -> None:
    outputs = {"a": np.zeros(2, np.int32), "b": np.ones(2, np.float32)}
    message = encode_infer_response("m", "1", "", outputs, ["b"])
    assert [o.name for o in message.outputs] == ["b"] and len(message.raw_output_contents) == 1
    with pytest.raises(InvalidArgumentError, match="'c' is not an output of model 'm'"):
        encode_infer_response("m", "1", "", outputs, ["c"])


def test_raw_inputs_are_zero_copy_views() -> None:
    data = _tritonclient_request([("x", "FP32", np.arange(6, dtype=np.float32).reshape(2, 3))])
    array = _decode(data).inputs["x"]
    assert not array.flags.owndata and not array.flags.writeable


def _raw_request(datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (_raw_request("INT32", [2], b"\0" * 7), "expected 8 bytes (2 INT32 elements"),
        (_raw_request("BOOL", [2], b"\x01\x02"), "BOOL raw data must be bytes 0 or 1"),
        (_raw_request("BYTES", [2], b"\x01\0\0\0a"), "holds 1 of the 2 elements"),
        (_raw_request("BYTES", [1], b"\x01\0\0\0ab"), "expected 5 bytes"),
        (_raw_request("INT32", [2, -3], b""), "dimension 1 is an integer -3, negative"),
        (_raw_request("INT32", [2**62, 4], b""), "overflows int64"),
        (_raw_request("FP8", [1], b"\0"), "expected one of BOOL"),
        (_raw_request("INT32", [1] * 65, b"\0" * 4), "at most 64 dimensions"),
    ],
    ids=["size", "bool", "bytes-short", "bytes-extra", "negative", "overflow", "dtype", "ndim"],
)
def test_wire_errors(request_: pb.ModelInferRequest, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        decode_infer_request(request_)
    assert message in str(info.value)


def test_parameter_errors() -> None:
    request = _raw_request("INT32", [1], b"\0" * 4)
    request.parameters["priority"].string_param = "high"
    with pytest.raises(InvalidArgumentError, match=r"parameter 'priority'.*received 'high'"):
        decode_infer_request(request)
    request = _raw_request("INT32", [1], b"\0" * 4)
    request.outputs.add(name="y")
    request.outputs.add(name="y")
    with pytest.raises(InvalidArgumentError, match="output 'y' is requested more than once"):
        decode_infer_request(request)
    request = _raw_request("INT32", [1], b"\0" * 4)
    request.inputs[0].name = ""
    with pytest.raises(InvalidArgumentError, match=r"inputs\[0\] 'name'"):
        decode_infer_request(request)


def test_zero_element_input_without_contents() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[0, 4])
    array = decode_infer_request(request).inputs["x"]
    assert array.shape == (0, 4) and array.dtype == np.float32
