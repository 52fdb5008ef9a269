"""Round trips of the V2 HTTP codec for every datatype, JSON (nested and flat) and binary."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from v2_codec_helpers import (
    DATATYPES,
    assert_same,
    binary_body,
    bytes_wire,
    json_body,
    parse_response,
    sample,
    tensor_json,
)

from accelserve.codecs.v2 import RequestedOutput
from accelserve.codecs.v2_http_decode import decode_infer_request
from accelserve.codecs.v2_http_encode import encode_infer_response
from accelserve.codecs.v2_http_json import decode_json, encode_json


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("nested", [True, False], ids=["nested", "flat"])
def test_json_input_round_trip(datatype: str, nested: bool) -> None:
    expected = sample(datatype, (2, 3))
    body = json_body([tensor_json("x", datatype, expected, nested=nested)])
    decoded = decode_infer_request(body, None)
    assert_same(decoded.inputs["x"], expected)


@pytest.mark.parametrize("datatype", DATATYPES)
def test_binary_input_round_trip(datatype: str) -> None:
    expected = sample(datatype, (3, 2, 2))
    body, header_length = binary_body([("x", datatype, expected)])
    decoded = decode_infer_request(body, header_length)
    assert_same(decoded.inputs["x"], expected)


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_output_round_trip(datatype: str, binary: bool) -> None:
    expected = sample(datatype, (2, 4), seed=3)
    body, header_length = encode_infer_response(
        "m", "1", "", {"y": expected}, [RequestedOutput("y", binary)], False
    )
    assert (header_length is None) is not binary
    header, arrays = parse_response(body, header_length)
    assert header["outputs"][0]["datatype"] == datatype
    assert header["outputs"][0]["shape"] == [2, 4]
    assert_same(arrays["y"], expected)


def test_binary_inputs_are_zero_copy_views_of_the_body() -> None:
    a, b = sample("FP32", (4, 8)), sample("INT64", (5,))
    body, header_length = binary_body([("a", "FP32", a), ("b", "INT64", b)])
    decoded = decode_infer_request(body, header_length)
    whole = np.frombuffer(body, dtype=np.uint8)
    for name in ("a", "b"):
        assert np.shares_memory(decoded.inputs[name], whole)


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytearray_and_memoryview_bodies(kind: type) -> None:
    a = sample("INT32", (1, 16))
    s = sample("BYTES", (3,))
    body, header_length = binary_body([("a", "INT32", a), ("s", "BYTES", s)])
    decoded = decode_infer_request(kind(body), header_length)
    assert_same(decoded.inputs["a"], a)
    assert_same(decoded.inputs["s"], s)


def test_mixed_json_and_binary_inputs_keep_binary_order() -> None:
    first, second = sample("FP16", (2, 2)), sample("UINT8", (7,))
    json_input = tensor_json("j", "BOOL", sample("BOOL", (3,)))
    raw1, raw2 = first.tobytes(), second.tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "b1",
                    "datatype": "FP16",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": len(raw1)},
                },
                json_input,
                {
                    "name": "b2",
                    "datatype": "UINT8",
                    "shape": [7],
                    "parameters": {"binary_data_size": len(raw2)},
                },
            ]
        }
    )
    decoded = decode_infer_request(header + raw1 + raw2, len(header))
    assert_same(decoded.inputs["b1"], first)
    assert_same(decoded.inputs["b2"], second)
    assert decoded.inputs["j"].tolist() == json_input["data"]


def test_bytes_inputs_both_ways() -> None:
    elements = [b"hello", b"", "ünï".encode(), b"\x00\xff binary"]
    raw = bytes_wire(elements)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "s",
                    "datatype": "BYTES",
                    "shape": [2, 2],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    )
    binary = decode_infer_request(header + raw, len(header)).inputs["s"]
    assert binary.dtype == object and binary.shape == (2, 2)
    assert binary.reshape(-1).tolist() == elements
    assert all(type(e) is bytes for e in binary.reshape(-1))
    text = decode_infer_request(
        json_body([{"name": "s", "datatype": "BYTES", "shape": [3], "data": ["a", "ü", ""]}]),
        None,
    ).inputs["s"]
    assert text.tolist() == [b"a", "ü".encode(), b""]


@pytest.mark.parametrize("shape", [[0], [2, 0], [0, 3, 4]])
@pytest.mark.parametrize("datatype", ["FP32", "BYTES", "BOOL"])
def test_empty_tensors(shape: list[int], datatype: str) -> None:
    data: list = [] if shape[0] == 0 else [[] for _ in range(shape[0])]
    decoded = decode_infer_request(
        json_body([{"name": "x", "datatype": datatype, "shape": shape, "data": data}]), None
    )
    assert decoded.inputs["x"].shape == tuple(shape)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    )
    assert decode_infer_request(header, len(header)).inputs["x"].shape == tuple(shape)


def test_nesting_need_not_follow_the_shape_when_the_count_fits() -> None:
    # Triton reads JSON data in row-major order whatever its nesting; so do we.
    body = json_body(
        [{"name": "x", "datatype": "INT32", "shape": [3, 2], "data": [[1, 2, 3], [4, [5, 6]]]}]
    )
    assert decode_infer_request(body, None).inputs["x"].tolist() == [[1, 2], [3, 4], [5, 6]]
    # A string where a row was expected stays one element (never split into characters).
    body = json_body([{"name": "s", "datatype": "BYTES", "shape": [2], "data": [["ab"], "cd"]}])
    assert decode_infer_request(body, None).inputs["s"].tolist() == [b"ab", b"cd"]


def test_float_inputs_accept_json_integers() -> None:
    body = json_body([{"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2.5, -3]}])
    assert decode_infer_request(body, None).inputs["x"].tolist() == [1.0, 2.5, -3.0]


def test_request_fields_and_parameters_are_kept() -> None:
    body = json_body(
        [tensor_json("x", "INT32", sample("INT32", (1, 16)))],
        id="req-9",
        parameters={"priority": 2, "timeout": 500, "custom": "v", "binary_data_output": True},
        outputs=[{"name": "o1"}, {"name": "o2", "parameters": {"binary_data": False}}],
    )
    decoded = decode_infer_request(body, None)
    assert decoded.id == "req-9"
    assert decoded.parameters["priority"] == 2 and decoded.parameters["timeout"] == 500
    assert decoded.parameters["custom"] == "v"
    assert decoded.binary_data_output is True
    assert decoded.outputs == [RequestedOutput("o1", None), RequestedOutput("o2", False)]
    plain = decode_infer_request(json_body([]), None)
    assert (plain.id, plain.outputs, plain.parameters, plain.binary_data_output) == (
        "",
        [],
        {},
        False,
    )


def test_response_binary_selection_rules() -> None:
    outputs = {"a": np.arange(4, dtype=np.int32), "b": np.ones((2, 2), np.float32)}
    # No outputs requested: every output, binary iff binary_data_output.
    body, length = encode_infer_response("m", "3", "", outputs, [], False)
    assert length is None
    header = orjson.loads(body)
    assert [o["name"] for o in header["outputs"]] == ["a", "b"]
    assert header["outputs"][0]["data"] == [0, 1, 2, 3]
    assert header["model_name"] == "m" and header["model_version"] == "3"
    assert "id" not in header
    body, length = encode_infer_response("m", "3", "r1", outputs, [], True)
    header, arrays = parse_response(body, length)
    assert header["id"] == "r1"
    assert [o["parameters"]["binary_data_size"] for o in header["outputs"]] == [16, 16]
    assert_same(arrays["b"], outputs["b"])
    # Requested outputs: their order; their own flag beats binary_data_output.
    requested = [RequestedOutput("b", None), RequestedOutput("a", False)]
    body, length = encode_infer_response("m", "3", "", outputs, requested, True)
    header, arrays = parse_response(body, length)
    assert [o["name"] for o in header["outputs"]] == ["b", "a"]
    assert "parameters" in header["outputs"][0] and "data" in header["outputs"][1]
    assert_same(arrays["a"], outputs["a"])


def test_json_output_data_is_flat_row_major_even_for_strided_arrays() -> None:
    base = np.arange(24, dtype=np.int64).reshape(4, 6)
    view = base[:, ::2].T  # neither C- nor F-contiguous
    body, _ = encode_infer_response("m", "1", "", {"v": view}, [], False)
    out = orjson.loads(body)["outputs"][0]
    assert out["shape"] == [3, 4]
    assert out["data"] == view.reshape(-1).tolist()
    body, length = encode_infer_response("m", "1", "", {"v": view}, [], True)
    assert_same(parse_response(body, length)[1]["v"], view)


def test_bytes_outputs_accept_str_and_fixed_width_arrays() -> None:
    outputs = {
        "u": np.array(["ab", "çd"]),
        "s": np.array([b"x", b"yz"]),
        "o": np.array(["p", b"q"], dtype=object),
    }
    body, length = encode_infer_response("m", "1", "", outputs, [], False)
    header = orjson.loads(body)
    assert [o["data"] for o in header["outputs"]] == [["ab", "çd"], ["x", "yz"], ["p", "q"]]
    assert all(o["datatype"] == "BYTES" for o in header["outputs"])
    body, length = encode_infer_response("m", "1", "", outputs, [], True)
    _, arrays = parse_response(body, length)
    assert arrays["u"].tolist() == [b"ab", "çd".encode()]
    assert arrays["o"].tolist() == [b"p", b"q"]


def test_json_helpers_round_trip() -> None:
    data = {"a": [1, 2.5, "x", None, True], "b": {"c": np.arange(3)}}
    assert decode_json(encode_json(data)) == {"a": [1, 2.5, "x", None, True], "b": {"c": [0, 1, 2]}}
    assert decode_json("[1]") == [1] and decode_json(memoryview(b"{}")) == {}


def test_depth_limit_is_inclusive_at_100_levels() -> None:
    # request{1 parameters{2 "p":[3 ... ]100 is allowed
    ok = json_body([], parameters={"p": orjson.loads(b"[" * 98 + b"]" * 98)})
    decode_infer_request(ok, None)
    decode_json(b"[" * 100 + b"]" * 100)
    # 64-dimensional data (NumPy's limit) sits at depth 4 + 63 and is fine.
    shape = [1] * 64
    data: list = [7]
    for _ in range(63):
        data = [data]
    body = json_body([{"name": "x", "datatype": "INT8", "shape": shape, "data": data}])
    assert decode_infer_request(body, None).inputs["x"].shape == tuple(shape)
