"""TF Serving's gRPC tensors: ``tensorflow.TensorProto`` <-> NumPy, and PredictRequest inputs.

A TensorProto carries its values either in ``tensor_content`` (little-endian, row-major bytes)
or in the repeated field of its dtype (``float_val``, ``int_val``, ``string_val``, ...; FP16 and
BF16 as 16-bit patterns in ``half_val``); as in TensorFlow, fewer typed values than the shape
holds repeat the last one (``tf.make_tensor_proto(7.0, shape=[3])`` sends one). Responses use
``tensor_content`` for numbers and ``string_val`` for DT_STRING, as TF Serving does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from accelserve.codecs.tfserving import TF_TO_V2, V2_TO_TF
from accelserve.codecs.v2 import MAX_DIMS, WIRE
from accelserve.errors import InvalidArgumentError
from accelserve.protocol.tf_framework_pb2 import DataType, TensorProto

# The repeated field that holds each datatype's values when tensor_content is empty.
_TYPED_FIELD: dict[str, str] = {
    "BOOL": "bool_val",
    "UINT8": "int_val",
    "UINT16": "int_val",
    "UINT32": "uint32_val",
    "UINT64": "uint64_val",
    "INT8": "int_val",
    "INT16": "int_val",
    "INT32": "int_val",
    "INT64": "int64_val",
    "FP16": "half_val",
    "FP32": "float_val",
    "FP64": "double_val",
    "BF16": "half_val",
    "BYTES": "string_val",
}
# How many elements repeating the last typed value may fill: the repetition is TensorFlow's rule,
# and without a bound a 4-byte message could ask for gigabytes.
MAX_REPEATED_ELEMENTS = 1 << 24


def decode_tensor(name: str, tensor: TensorProto, max_elements: int = 2**32) -> np.ndarray:
    """The array a TensorProto holds; errors name the input, the expected and received values."""
    dtype_name = (
        DataType.Name(tensor.dtype) if tensor.dtype in DataType.values() else str(tensor.dtype)
    )
    datatype = TF_TO_V2.get(dtype_name)
    if datatype is None:
        raise InvalidArgumentError(
            f"input '{name}' dtype: expected one of {', '.join(V2_TO_TF.values())}; received "
            f"{dtype_name}"
        )
    if tensor.tensor_shape.unknown_rank:
        raise InvalidArgumentError(f"input '{name}': tensor_shape has unknown_rank; send its dims")
    shape = [dim.size for dim in tensor.tensor_shape.dim]
    if len(shape) > MAX_DIMS or any(size < 0 for size in shape):
        raise InvalidArgumentError(
            f"input '{name}' tensor_shape: expected at most {MAX_DIMS} non-negative sizes; "
            f"received {shape}"
        )
    count = math.prod(shape)
    if count > max_elements:
        raise InvalidArgumentError(
            f"input '{name}': shape {shape} holds {count} elements, more than {max_elements}"
        )
    if tensor.tensor_content and datatype != "BYTES":
        return _from_content(name, datatype, shape, count, tensor.tensor_content)
    return _from_values(name, datatype, shape, count, getattr(tensor, _TYPED_FIELD[datatype]))


def _from_content(
    name: str, datatype: str, shape: list[int], count: int, data: bytes
) -> np.ndarray:
    dtype = WIRE[datatype]
    if len(data) != count * dtype.itemsize:
        raise InvalidArgumentError(
            f"input '{name}': tensor_content holds {len(data)} bytes; shape {shape} of "
            f"{V2_TO_TF[datatype]} needs {count * dtype.itemsize}"
        )
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and array.view(np.uint8).max(initial=0) > 1:
        raise InvalidArgumentError(f"input '{name}': DT_BOOL tensor_content bytes must be 0 or 1")
    return array


def _from_values(name: str, datatype: str, shape: list[int], count: int, values: Any) -> np.ndarray:
    field = _TYPED_FIELD[datatype]
    given = len(values)
    if given > count or (given == 0 and count > 0):
        raise InvalidArgumentError(
            f"input '{name}': shape {shape} holds {count} elements; received {given} values in "
            f"{field} (and no tensor_content)"
        )
    if given < count > MAX_REPEATED_ELEMENTS:
        raise InvalidArgumentError(
            f"input '{name}': {given} values in {field} for shape {shape} ({count} elements): "
            f"repeating the last value fills at most {MAX_REPEATED_ELEMENTS} elements; send "
            f"every value or use tensor_content"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:given] = list(values)
    elif datatype in ("FP16", "BF16"):
        bits = np.asarray(values, dtype=np.int64)
        if bits.size and (bits.min() < 0 or bits.max() > 0xFFFF):
            raise InvalidArgumentError(f"input '{name}': half_val holds 16-bit patterns (0..65535)")
        array = np.empty(count, dtype=WIRE[datatype])
        array[:given] = bits.astype(np.uint16).view(WIRE[datatype])
    else:
        dtype = WIRE[datatype]
        raw = np.asarray(values)
        if dtype.kind in "iu" and raw.size:
            info = np.iinfo(dtype)
            if raw.min() < info.min or raw.max() > info.max:
                raise InvalidArgumentError(
                    f"input '{name}': {V2_TO_TF[datatype]} values must lie in "
                    f"[{info.min}, {info.max}]; received {raw.min()}..{raw.max()} in {field}"
                )
        array = np.empty(count, dtype=dtype)
        array[:given] = raw.astype(dtype)
    if 0 < given < count:
        array[given:] = array[given - 1]
    return array.reshape(shape)


def encode_tensor(array: np.ndarray, datatype: str) -> TensorProto:
    """A response tensor: ``tensor_content`` for numbers, ``string_val`` for DT_STRING."""
    tensor = TensorProto(dtype=V2_TO_TF[datatype])
    for size in array.shape:
        tensor.tensor_shape.dim.add(size=size)
    if datatype == "BYTES":
        tensor.string_val.extend(
            v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1)
        )
    else:
        tensor.tensor_content = np.ascontiguousarray(array, dtype=WIRE[datatype]).tobytes()
    return tensor
