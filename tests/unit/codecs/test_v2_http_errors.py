"""Every malformed V2 request raises InvalidArgumentError naming the field, expected, received."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
from v2_codec_helpers import bytes_wire, json_body

from accelserve.codecs.v2 import RequestedOutput
from accelserve.codecs.v2_http_decode import decode_infer_request
from accelserve.codecs.v2_http_encode import encode_infer_response
from accelserve.codecs.v2_http_json import decode_json
from accelserve.errors import InvalidArgumentError


def rejects(body: bytes | bytearray, header_length: int | None = None, **kw: Any) -> str:
    with pytest.raises(InvalidArgumentError) as info:
        decode_infer_request(body, header_length, **kw)
    message = str(info.value)
    assert "Traceback" not in message and 'File "' not in message
    return message


def one(**fields: Any) -> bytes:
    """A request with one input built from ``fields`` (defaults: a valid INT32[2])."""
    spec: dict[str, Any] = {"name": "x", "datatype": "INT32", "shape": [2], "data": [1, 2]}
    spec.update(fields)
    return json_body([{k: v for k, v in spec.items() if v is not ...}])


def binary(spec: dict[str, Any], payload: bytes) -> tuple[bytes, int]:
    header = orjson.dumps({"inputs": [spec]})
    return header + payload, len(header)


def test_malformed_json_says_so_and_where() -> None:
    message = rejects(b'{"inputs": [1, 2,')
    assert "malformed JSON" in message and "line 1 column 18" in message


def test_malformed_json_header_names_the_header() -> None:
    message = rejects(b'{"inputs": oops}\x00\x01', 16)
    assert "malformed JSON in request JSON header (first 16 bytes)" in message


@pytest.mark.parametrize("body, received", [(b"[1]", "an array"), (b'"x"', 'a string "x"')])
def test_body_must_be_an_object(body: bytes, received: str) -> None:
    message = rejects(body)
    assert "expected a JSON object" in message and received in message


@pytest.mark.parametrize(
    "body, received",
    [(b"{}", "received nothing"), (b'{"inputs": {"name": "x"}}', "received an object")],
)
def test_inputs_missing_or_not_a_list(body: bytes, received: str) -> None:
    message = rejects(body)
    assert "'inputs'" in message and "expected a list" in message and received in message


def test_input_must_be_an_object() -> None:
    assert "inputs[0]: expected an object" in rejects(json_body([3]))


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"name": ...}, "inputs[0] 'name': expected a non-empty string; received null"),
        ({"name": ""}, "inputs[0] 'name': expected a non-empty string"),
        ({"datatype": ...}, "input 'x' 'datatype': expected one of"),
        (
            {"shape": ...},
            "input 'x' 'shape': expected a list of non-negative integers; received nothing",
        ),
    ],
)
def test_input_missing_name_datatype_or_shape(fields: dict, needle: str) -> None:
    assert needle in rejects(one(**fields))


def test_unknown_datatype_lists_the_valid_ones() -> None:
    message = rejects(one(datatype="FP8"))
    assert "'datatype'" in message and '"FP8"' in message
    for valid in ("BOOL", "INT32", "FP16", "BF16", "BYTES"):
        assert valid in message


@pytest.mark.parametrize(
    "shape, needle",
    [
        ("2", 'received a string "2"'),
        ([2, -3], "dimension 1 is an integer -3, negative"),
        ([1.5], "dimension 0 is a number 1.5, not an integer"),
        ([True], "dimension 0 is a boolean true, not an integer"),
        ([1] * 65, "expected at most 64 dimensions; received 65"),
    ],
)
def test_shape_must_be_non_negative_integers(shape: Any, needle: str) -> None:
    message = rejects(one(shape=shape))
    assert "input 'x' 'shape'" in message and needle in message


@pytest.mark.parametrize(
    "shape", [[2**62, 4], [2**63], [2**64 - 1], [0, 2**62, 2**62], [0, 2**61], [2**61, 0]]
)
def test_element_count_overflowing_int64(shape: list[int]) -> None:
    message = rejects(one(shape=shape))
    assert f"'shape' {shape}" in message and "overflows int64" in message


def test_element_count_above_max_elements() -> None:
    message = rejects(one(shape=[1000, 1000]), max_elements=10_000)
    assert "[1000, 1000]" in message and "1000000 elements" in message and "10000" in message
    message = rejects(one(shape=[0, 1000, 1000], data=[]), max_elements=10_000)
    assert "1000000 elements (zero dimensions aside), above the limit of 10000" in message


@pytest.mark.parametrize("data", [[1, 2, 3], [[1], [2], [3]], []])
def test_data_must_fill_the_shape(data: list) -> None:
    message = rejects(one(shape=[2, 2], data=data))
    count = len(np.array(data).reshape(-1))
    assert "input 'x'" in message and f"expected 4 elements, received {count}" in message
    assert "[2, 2]" in message


@pytest.mark.parametrize(
    "datatype, data, needle",
    [
        ("INT32", [1, "2"], 'INT32 data must be JSON integers; received a string "2" at element 1'),
        ("INT32", [1, 2.5], "received a number 2.5 at element 1"),
        ("INT64", [True, 1], "received a boolean true at element 0"),
        ("INT32", [[1], [None]], "received null at element 1"),
        ("UINT8", [[1], {"a": 1}], "received an object at element 1"),
        ("FP32", [1.0, None], "FP32 data must be JSON numbers; received null at element 1"),
        ("BOOL", [True, 1], "BOOL data must be JSON booleans (true/false); received an integer"),
        ("BYTES", ["a", 5], "BYTES data must be JSON strings; received an integer 5"),
    ],
)
def test_data_of_the_wrong_kind(datatype: str, data: list, needle: str) -> None:
    message = rejects(one(datatype=datatype, data=data))
    assert "input 'x'" in message and needle in message


@pytest.mark.parametrize(
    "datatype, value, bounds",
    [
        ("UINT8", 256, "[0, 255]"),
        ("UINT32", -1, "[0, 4294967295]"),
        ("INT8", -129, "[-128, 127]"),
        ("INT64", 2**63, "[-9223372036854775808, 9223372036854775807]"),
    ],
)
def test_integers_out_of_range(datatype: str, value: int, bounds: str) -> None:
    message = rejects(one(datatype=datatype, data=[0, value]))
    assert f"{datatype} values must lie in {bounds}; received {value} at element 1" in message


@pytest.mark.parametrize(
    "datatype, limit", [("FP16", "65504"), ("FP32", "3.40282e+38"), ("BF16", "3.38953e+38")]
)
def test_floats_beyond_the_type_range(datatype: str, limit: str) -> None:
    message = rejects(one(datatype=datatype, data=[1.0, 1e300]))
    assert f"{datatype} values must lie within +-{limit}; received 1e+300 at element 1" in message


def test_data_must_be_an_array() -> None:
    assert "input 'x' 'data': expected a JSON array; received an integer 3" in rejects(one(data=3))


def test_data_and_binary_data_size_together_or_neither() -> None:
    both = one(parameters={"binary_data_size": 8})
    assert "input 'x': expected either 'data' or parameters.binary_data_size; received both" in (
        rejects(both + b"\x00" * 8, len(both))
    )
    assert "received neither" in rejects(one(data=...))


def test_binary_data_size_must_match_shape_and_element_size() -> None:
    spec = {
        "name": "x",
        "datatype": "FP32",
        "shape": [2, 8],
        "parameters": {"binary_data_size": 60},
    }
    message = rejects(*binary(spec, b"\x00" * 60))
    assert "input 'x' binary_data_size: expected 64 bytes" in message
    assert "16 FP32 elements of 4 bytes" in message and "received 60" in message


@pytest.mark.parametrize("size", [-1, "8", 1.5, True])
def test_binary_data_size_must_be_a_non_negative_integer(size: Any) -> None:
    spec = {
        "name": "x",
        "datatype": "INT32",
        "shape": [2],
        "parameters": {"binary_data_size": size},
    }
    message = rejects(*binary(spec, b"\x00" * 8))
    assert "input 'x' parameter 'binary_data_size': expected a non-negative integer" in message


def test_binary_data_running_past_the_end_of_the_body() -> None:
    spec = {"name": "x", "datatype": "INT32", "shape": [4], "parameters": {"binary_data_size": 16}}
    body, length = binary(spec, b"\x00" * 10)
    message = rejects(body, length)
    assert "input 'x' binary_data_size 16 runs past the end of the body" in message
    assert f"end at byte {length + 16}" in message and f"has {length + 10} bytes" in message


def test_header_length_past_the_end_of_the_body() -> None:
    body = one()
    message = rejects(body, len(body) + 5)
    assert "Inference-Header-Content-Length" in message
    assert f"is {len(body) + 5} bytes" in message and f"has {len(body)} bytes" in message
    assert "expected a non-negative integer" in rejects(body, -1)


def test_binary_data_without_a_header_length() -> None:
    message = rejects(one(data=..., parameters={"binary_data_size": 8}))
    assert "input 'x' has binary_data_size 8" in message
    assert "no Inference-Header-Content-Length" in message


def test_trailing_bytes_after_the_binary_data() -> None:
    body = one()
    message = rejects(body + b"junk", len(body))
    assert "4 bytes after the JSON header" in message and "add up to 0" in message


def bytes_input(payload: bytes, shape: list[int]) -> tuple[bytes, int]:
    spec = {
        "name": "s",
        "datatype": "BYTES",
        "shape": shape,
        "parameters": {"binary_data_size": len(payload)},
    }
    return binary(spec, payload)


def test_bytes_length_prefix_running_past_its_buffer() -> None:
    payload = bytes_wire([b"ok"]) + struct.pack("<I", 50) + b"short"
    message = rejects(*bytes_input(payload, [2]))
    assert "input 's': BYTES element 1 has a length prefix of 50 bytes" in message
    assert "runs past its buffer (5 bytes remain)" in message


def test_bytes_buffer_with_too_few_elements() -> None:
    message = rejects(*bytes_input(bytes_wire([b"a", b"b"]) + b"\x01\x00", [3]))
    assert "holds 2 of the 3 elements" in message and "4-byte length prefix" in message


def test_bytes_buffer_with_bytes_left_over() -> None:
    message = rejects(*bytes_input(bytes_wire([b"a", b"b"]) + b"zz", [2]))
    assert "input 's' binary_data_size: expected 10 bytes" in message and "received 12" in message


def test_bool_binary_bytes_must_be_0_or_1() -> None:
    spec = {"name": "b", "datatype": "BOOL", "shape": [3], "parameters": {"binary_data_size": 3}}
    message = rejects(*binary(spec, b"\x01\x00\x07"))
    assert "input 'b': BOOL binary data must be bytes 0 or 1; received 7 at element 2" in message


def test_duplicate_input_names() -> None:
    spec = {"name": "x", "datatype": "INT32", "shape": [1], "data": [1]}
    assert "input 'x' appears more than once" in rejects(json_body([spec, spec]))


def test_duplicate_requested_outputs() -> None:
    message = rejects(json_body([], outputs=[{"name": "y"}, {"name": "y"}]))
    assert "output 'y' is requested more than once" in message


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"id": 7}, "request 'id': expected a string; received an integer 7"),
        ({"parameters": []}, "request 'parameters': expected an object; received an array"),
        (
            {"parameters": {"binary_data_output": "yes"}},
            "'binary_data_output': expected true or false; received a string",
        ),
        ({"outputs": {"name": "y"}}, "request 'outputs': expected a list"),
        ({"outputs": ["y"]}, "outputs[0]: expected an object"),
        ({"outputs": [{"name": 3}]}, "outputs[0] 'name': expected a non-empty string"),
        (
            {"outputs": [{"name": "y", "parameters": {"binary_data": 1}}]},
            "output 'y' parameter 'binary_data': expected true or false; received an integer 1",
        ),
        (
            {"outputs": [{"name": "y", "parameters": {"classification": 0}}]},
            "output 'y' parameter 'classification': expected the number of classes to return "
            "(a positive integer); received an integer 0",
        ),
        (
            {"outputs": [{"name": "y", "parameters": {"shared_memory_region": "r"}}]},
            "output 'y' parameter 'shared_memory_byte_size': expected a non-negative integer; "
            "received nothing",
        ),
    ],
)
def test_request_level_fields(fields: dict, needle: str) -> None:
    assert needle in rejects(json_body([], **fields))


def test_input_parameters_must_be_an_object_with_whole_shared_memory_references() -> None:
    assert "input 'x' 'parameters': expected an object" in rejects(one(parameters=[1]))
    message = rejects(one(parameters={"shared_memory_region": "r"}))
    assert "input 'x' parameter 'shared_memory_byte_size': expected a non-negative" in message
    message = rejects(one(parameters={"shared_memory_byte_size": 4}))
    assert "input 'x' parameter 'shared_memory_region': expected the name" in message
    message = rejects(one(parameters={"shared_memory_region": "r", "shared_memory_byte_size": -1}))
    assert "'shared_memory_byte_size': expected a non-negative integer; received an integer -1" in (
        message
    )
    both = {"shared_memory_region": "r", "shared_memory_byte_size": 4}
    assert "received both" in rejects(one(parameters=both))


def nest(levels: int) -> Any:
    return orjson.loads(b"[" * levels + b"]" * levels)


@pytest.mark.parametrize(
    "body, where",
    [
        (json_body([], parameters={"p": nest(99)}), "request parameter 'p'"),
        (json_body([], extra={"a": nest(99)}), "request field 'extra'"),
        (one(parameters={"q": nest(97)}), "input 'x' parameter 'q'"),
        (one(note=nest(98)), "input 'x' field 'note'"),
        (
            json_body([], outputs=[{"name": "y", "parameters": {"r": nest(97)}}]),
            "output 'y' parameter 'r'",
        ),
        (one(shape=[1], data=nest(98)), "'data' of input 'x'"),
        (one(shape=[2], data=[1, nest(97)]), "'data' of input 'x'"),
        (one(shape=[1], data=[0])[:-5] + b"[" * 2000 + b"]" * 2000 + b"}]}", "at char"),
    ],
)
def test_json_nested_deeper_than_100_levels(body: bytes, where: str) -> None:
    message = rejects(body)
    assert "JSON nested deeper than the limit of 100 levels" in message and where in message


def test_decode_json_depth_and_syntax() -> None:
    with pytest.raises(InvalidArgumentError, match="limit of 100 levels"):
        decode_json(b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}")
    with pytest.raises(InvalidArgumentError, match="limit of 100 levels"):
        decode_json("[" * 101 + "]" * 101)
    with pytest.raises(InvalidArgumentError, match=r"malformed JSON .* line 2 column 1"):
        decode_json(b'{"a":\n}')


def test_response_with_an_unknown_requested_output() -> None:
    with pytest.raises(InvalidArgumentError, match="requested output 'nope' is not an output of"):
        encode_infer_response(
            "m", "1", "", {"y": np.zeros(1)}, [RequestedOutput("nope", None)], False
        )


def test_response_bytes_that_are_not_utf8_need_binary() -> None:
    outputs = {"s": np.array([b"\xff\xfe"], dtype=object)}
    with pytest.raises(InvalidArgumentError, match=r"output 's'.*not valid UTF-8.*binary_data"):
        encode_infer_response("m", "1", "", outputs, [], False)
    body, length = encode_infer_response("m", "1", "", outputs, [], True)
    assert length is not None and body.endswith(b"\x02\x00\x00\x00\xff\xfe")
