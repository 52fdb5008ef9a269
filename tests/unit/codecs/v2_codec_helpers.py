"""Builders for V2 request bodies and sample tensors, written from the spec (not the codec)."""

from __future__ import annotations

import math
import struct
from typing import Any

import ml_dtypes
import numpy as np
import orjson

DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]
NUMPY = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BF16": ml_dtypes.bfloat16,
    "BYTES": np.object_,
}


def sample(datatype: str, shape: tuple[int, ...] = (2, 3), seed: int = 0) -> np.ndarray:
    """A tensor of ``datatype`` whose values exercise the type's range (extremes included)."""
    rng = np.random.default_rng(seed)
    n = math.prod(shape)
    if datatype == "BYTES":
        items = [("é" * (i % 3) + f"s{i}").encode() for i in range(n)]
        if n > 1:
            items[1] = b""  # empty elements are legal
        flat = np.empty(n, dtype=object)
        flat[:] = items
        return flat.reshape(shape)
    if datatype == "BOOL":
        return (rng.random(n) > 0.5).reshape(shape)
    dtype = np.dtype(NUMPY[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        flat = rng.integers(info.min, info.max, size=n, dtype=dtype, endpoint=True)
        flat[: min(n, 2)] = [info.min, info.max][: min(n, 2)]
        return flat.reshape(shape)
    return (rng.standard_normal(n) * 100).astype(np.float32).astype(dtype).reshape(shape)


def json_values(array: np.ndarray) -> list[Any]:
    """Nested JSON-ready values of ``array`` (row-major), as a V2 client would send them."""
    if array.dtype.kind == "O":
        return np.vectorize(lambda b: b.decode(), otypes=[object])(array).tolist()
    if array.dtype == ml_dtypes.bfloat16:
        return array.astype(np.float32).tolist()
    return array.tolist()


def flat_values(array: np.ndarray) -> list[Any]:
    return json_values(array.reshape(-1))


def bytes_wire(elements: list[bytes]) -> bytes:
    """BYTES elements in binary form: 4-byte little-endian length, then the bytes."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def raw_bytes(array: np.ndarray) -> bytes:
    if array.dtype.kind == "O":
        return bytes_wire(list(array.reshape(-1)))
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def tensor_json(name: str, datatype: str, array: np.ndarray, nested: bool = True) -> dict:
    data = json_values(array) if nested else flat_values(array)
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": data}


def json_body(inputs: list[dict], **fields: Any) -> bytes:
    return orjson.dumps({"inputs": inputs, **fields})


def binary_body(tensors: list[tuple[str, str, np.ndarray]], **fields: Any) -> tuple[bytes, int]:
    """A request whose inputs all travel as binary data after the JSON header."""
    specs, payloads = [], []
    for name, datatype, array in tensors:
        raw = raw_bytes(array)
        specs.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        payloads.append(raw)
    header = orjson.dumps({"inputs": specs, **fields})
    return header + b"".join(payloads), len(header)


def parse_response(body: bytes, header_length: int | None) -> tuple[dict, dict[str, np.ndarray]]:
    """Split a response into its JSON and its outputs (binary ones read at their offsets)."""
    header = orjson.loads(body if header_length is None else body[:header_length])
    offset = len(body) if header_length is None else header_length
    arrays: dict[str, np.ndarray] = {}
    for out in header["outputs"]:
        dtype = np.dtype(NUMPY[out["datatype"]])
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            data = out["data"]
            if out["datatype"] == "BYTES":
                data = [s.encode() for s in data]
            if dtype.kind == "O":
                flat = np.empty(len(data), dtype=object)
                flat[:] = data
            else:
                flat = np.array(data, dtype=dtype)
        else:
            chunk = body[offset : offset + size]
            offset += size
            if dtype.kind == "O":
                items, pos = [], 0
                while pos < len(chunk):
                    (length,) = struct.unpack_from("<I", chunk, pos)
                    items.append(chunk[pos + 4 : pos + 4 + length])
                    pos += 4 + length
                flat = np.empty(len(items), dtype=object)
                flat[:] = items
            else:
                flat = np.frombuffer(chunk, dtype=dtype)
        arrays[out["name"]] = flat.reshape(out["shape"])
    assert offset == len(body), "response has bytes no output accounts for"
    return header, arrays


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if expected.dtype.kind == "O":
        assert actual.tolist() == expected.tolist()
    else:
        np.testing.assert_array_equal(actual, expected)
