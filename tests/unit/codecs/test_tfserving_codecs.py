"""TF Serving's codecs without a server: the REST JSON body both ways, TensorProto both ways, and
the status and signature messages."""

from __future__ import annotations

import base64
import json

import ml_dtypes
import numpy as np
import pytest

from accelserve.codecs.tfserving import as_json, model_status, parse_version, signature_def_map
from accelserve.codecs.tfserving_json import COLUMNAR, ROW, decode_predict, encode_predict
from accelserve.codecs.tfserving_tensor import decode_tensor, encode_tensor
from accelserve.errors import InvalidArgumentError, ModelNotFoundError
from accelserve.protocol.tf_framework_pb2 import DataType, TensorProto
from accelserve.types import TensorSpec

SPECS = {
    "a": TensorSpec("a", "FP32", (2,)),
    "b": TensorSpec("b", "INT64", (1,)),
    "s": TensorSpec("s", "BYTES", (1,)),
}
ONE = {"x": TensorSpec("x", "INT32", (3,))}


def _body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_row_objects_stack_per_input() -> None:
    body = decode_predict(
        _body({"instances": [{"a": [1, 2], "b": [3]}, {"a": [4.5, 5], "b": [6]}]}), SPECS
    )
    assert body.format == ROW and body.signature_name == ""
    np.testing.assert_array_equal(body.inputs["a"], np.array([[1, 2], [4.5, 5]], np.float32))
    assert body.inputs["a"].dtype == np.float32 and body.inputs["b"].dtype == np.int64
    assert body.inputs["b"].tolist() == [[3], [6]]


def test_columnar_and_single_input_values() -> None:
    body = decode_predict(_body({"inputs": [[1, 2, 3]], "signature_name": "x"}), ONE)
    assert body.format == COLUMNAR and body.signature_name == "x"
    assert body.inputs["x"].dtype == np.int32 and body.inputs["x"].shape == (1, 3)
    scalar = decode_predict(_body({"inputs": {"x": 5}}), ONE)
    assert scalar.inputs["x"].shape == () and scalar.inputs["x"] == 5


def test_bytes_text_and_base64() -> None:
    blob = b"\x00\xffz"
    raw = {"b64": base64.b64encode(blob).decode()}
    body = decode_predict(_body({"instances": [{"s": ["é"]}, {"s": [raw]}]}), {"s": SPECS["s"]})
    assert body.inputs["s"].tolist() == [["é".encode()], [blob]]
    # A one-input model's instances may be base64 objects themselves.
    bare = decode_predict(_body({"instances": [raw]}), {"s": TensorSpec("s", "BYTES", ())})
    assert bare.inputs["s"].tolist() == [blob]


def test_nan_and_infinity_are_accepted() -> None:
    body = decode_predict(b'{"inputs": {"a": [[NaN, -Infinity]]}}', {"a": SPECS["a"]})
    value = body.inputs["a"][0]
    assert np.isnan(value[0]) and value[1] == -np.inf


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        ({"instances": [[1, 2, 3], [1, 2]]}, ("ragged", "depth 2", "2, 3")),
        ({"instances": [[1, 2, 3], 4]}, ("ragged", "depth 1")),
        ({"instances": [[1, 2, True]]}, ("INT32", "boolean")),
        ({"instances": [[1, 2, 2**40]]}, ("INT32", "1099511627776")),
        ({"instances": {"x": [1, 2, 3]}}, ("non-empty list",)),
        ({"inputs": {"y": [1]}}, ("unknown input 'y'", "x")),
        ({"inputs": [1], "signature_name": 3}, ("signature_name", "string")),
        ({}, ("neither",)),
    ],
)
def test_bad_bodies_name_the_problem(obj: object, words: tuple[str, ...]) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        decode_predict(_body(obj), ONE)
    for word in words:
        assert word in info.value.message


def test_bad_base64_and_wrong_kinds() -> None:
    spec = {"s": TensorSpec("s", "BYTES", ())}
    with pytest.raises(InvalidArgumentError, match="not valid base64"):
        decode_predict(_body({"instances": [{"b64": "%%%"}]}), spec)
    with pytest.raises(InvalidArgumentError, match="DT_STRING"):
        decode_predict(_body({"instances": [{"b64": 3}]}), spec)
    with pytest.raises(InvalidArgumentError, match="object keyed by input name"):
        decode_predict(_body({"instances": [[1.0, 2.0]]}), SPECS)
    with pytest.raises(InvalidArgumentError, match="malformed JSON"):
        decode_predict(b"{", ONE)


def test_encode_row_and_columnar() -> None:
    outputs = {"y": np.array([[1, 2], [3, 4]], np.int32), "z": np.array([0.5, 1.5], np.float32)}
    assert json.loads(encode_predict(ROW, outputs)) == {
        "predictions": [{"y": [1, 2], "z": 0.5}, {"y": [3, 4], "z": 1.5}]
    }
    assert json.loads(encode_predict(COLUMNAR, outputs)) == {
        "outputs": {"y": [[1, 2], [3, 4]], "z": [0.5, 1.5]}
    }
    single = {"y": outputs["y"]}
    assert json.loads(encode_predict(ROW, single)) == {"predictions": [[1, 2], [3, 4]]}
    assert json.loads(encode_predict(COLUMNAR, single)) == {"outputs": [[1, 2], [3, 4]]}


def test_encode_half_types_bytes_and_non_finite() -> None:
    outputs = {
        "h": np.array([1.5, 2], np.float16),
        "b": np.array([1.5, -2], ml_dtypes.bfloat16),
        "t": np.array([b"ok", b"\xff"], dtype=object),
        "img_bytes": np.array([b"ok", b""], dtype=object),
    }
    data = json.loads(encode_predict(COLUMNAR, outputs))["outputs"]
    assert data["h"] == [1.5, 2.0] and data["b"] == [1.5, -2.0]
    assert data["t"] == ["ok", {"b64": base64.b64encode(b"\xff").decode()}]
    assert data["img_bytes"] == [{"b64": "b2s="}, {"b64": ""}]
    body = encode_predict(COLUMNAR, {"y": np.array([np.nan, np.inf, 1], np.float32)})
    assert body == b'{"outputs":[NaN,Infinity,1.0]}'


def test_row_format_needs_a_shared_batch() -> None:
    outputs = {"y": np.zeros((2, 3)), "z": np.zeros(3)}
    with pytest.raises(InvalidArgumentError, match="inconsistent batch size: 3 expecting: 2"):
        encode_predict(ROW, outputs)
    with pytest.raises(InvalidArgumentError, match="columnar"):
        encode_predict(ROW, {"y": np.float32(1) * np.ones(())})


@pytest.mark.parametrize(
    "array",
    [
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.arange(6, dtype=np.float64).reshape(3, 2),
        np.array([[-128, 127]], np.int8),
        np.array([[0, 65535]], np.uint16),
        np.array([-(2**40), 2**40], np.int64),
        np.array([2**63], np.uint64),
        np.array([2**31], np.uint32),
        np.array([True, False]),
        np.array([1.5, -2], np.float16),
        np.array([1.5, -2], ml_dtypes.bfloat16),
    ],
)
def test_tensor_round_trip(array: np.ndarray) -> None:
    from accelserve.codecs.v2 import output_datatype

    tensor = encode_tensor(array, output_datatype("m", "y", array))
    assert tensor.tensor_content and not tensor.float_val
    np.testing.assert_array_equal(decode_tensor("y", tensor), array)


def test_typed_values_per_dtype() -> None:
    cases = [
        (DataType.DT_FLOAT, "float_val", [1.5, 2.5], np.float32),
        (DataType.DT_INT8, "int_val", [-3, 4], np.int8),
        (DataType.DT_INT64, "int64_val", [-(2**40), 1], np.int64),
        (DataType.DT_UINT64, "uint64_val", [2**63, 1], np.uint64),
        (DataType.DT_BOOL, "bool_val", [True, False], np.bool_),
    ]
    for dtype, field, values, numpy in cases:
        tensor = TensorProto(dtype=dtype, **{field: values})
        tensor.tensor_shape.dim.add(size=2)
        result = decode_tensor("x", tensor)
        assert result.dtype == numpy and result.tolist() == values
    half = TensorProto(dtype=DataType.DT_HALF, half_val=[0x3E00])  # 1.5, repeated
    half.tensor_shape.dim.add(size=3)
    assert decode_tensor("x", half).tolist() == [1.5, 1.5, 1.5]
    text = TensorProto(dtype=DataType.DT_STRING, string_val=[b"a", b"\xff"])
    text.tensor_shape.dim.add(size=2)
    assert decode_tensor("x", text).tolist() == [b"a", b"\xff"]
    assert encode_tensor(decode_tensor("x", text), "BYTES").string_val == [b"a", b"\xff"]


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        (TensorProto(dtype=DataType.DT_COMPLEX64), ("dtype", "DT_COMPLEX64")),
        (TensorProto(dtype=DataType.DT_INT32, int_val=[1, 2, 3]), ("2 elements", "3 values")),
        (TensorProto(dtype=DataType.DT_INT32), ("2 elements", "0 values")),
        (TensorProto(dtype=DataType.DT_INT8, int_val=[1, 300]), ("DT_INT8", "[-128, 127]")),
        (TensorProto(dtype=DataType.DT_FLOAT, tensor_content=b"1234"), ("4 bytes", "8")),
        (TensorProto(dtype=DataType.DT_BOOL, tensor_content=b"\x00\x02"), ("0 or 1",)),
        (TensorProto(dtype=DataType.DT_HALF, half_val=[70000, 1]), ("16-bit",)),
    ],
)
def test_bad_tensors(tensor: TensorProto, words: tuple[str, ...]) -> None:
    tensor.tensor_shape.dim.add(size=2)
    with pytest.raises(InvalidArgumentError) as info:
        decode_tensor("x", tensor)
    assert "'x'" in info.value.message
    for word in words:
        assert word in info.value.message


def test_repeating_the_last_value_is_bounded() -> None:
    tensor = TensorProto(dtype=DataType.DT_INT32, int_val=[1])
    tensor.tensor_shape.dim.add(size=1 << 30)
    with pytest.raises(InvalidArgumentError, match="repeating the last value fills at most"):
        decode_tensor("x", tensor)


def test_status_rows() -> None:
    rows = [
        {"name": "m", "version": "1", "state": "READY"},
        {"name": "m", "version": "2", "state": "UNLOADING"},
        {"name": "new", "version": "", "state": "LOADING"},
        {"name": "bad", "version": "", "state": "UNAVAILABLE", "reason": "file missing"},
        {"name": "off", "state": "UNAVAILABLE", "reason": "not loaded"},
    ]
    data = as_json(model_status(rows, "m", ""))["model_version_status"]
    assert [(s["version"], s["state"]) for s in data] == [("1", "AVAILABLE"), ("2", "UNLOADING")]
    assert data[0]["status"] == {"error_code": "OK", "error_message": ""}
    loading = as_json(model_status(rows, "new", ""))["model_version_status"]
    assert loading == [
        {"version": "0", "state": "LOADING", "status": {"error_code": "OK", "error_message": ""}}
    ]
    bad = as_json(model_status(rows, "bad", ""))["model_version_status"][0]
    assert bad["state"] == "END" and bad["status"]["error_message"] == "file missing"
    off = as_json(model_status(rows, "off", ""))["model_version_status"][0]
    assert off["state"] == "END" and off["status"]["error_code"] == "OK"
    with pytest.raises(ModelNotFoundError, match="Could not find version 3 of model m"):
        model_status(rows, "m", "3")
    with pytest.raises(ModelNotFoundError, match="any versions of model x"):
        model_status(rows, "x", "")


def test_versions_and_signature() -> None:
    assert parse_version("007") == "7"
    with pytest.raises(InvalidArgumentError, match="Failed to convert version: v1"):
        parse_version("v1")
    signature = as_json(signature_def_map(ONE.values(), ONE.values(), 0))
    info = signature["signature_def"]["serving_default"]["inputs"]["x"]
    assert info["dtype"] == "DT_INT32" and info["tensor_shape"]["dim"] == [
        {"size": "3", "name": ""}
    ]
