"""An ONNX file's initializers as NumPy arrays, read without the ``onnx`` package.

The ONNX Runtime backend shares one copy of a model's weights between its CPU instances. Reading
them with ``onnx`` costs a server that only needs the weights the ``onnx`` import (~60 ms, ~12
MiB that stay resident) and a full parse of the file into protobuf objects (for MiniLM's 90 MB,
~110 ms and a transient second copy of every weight) before the arrays are copied out. Here the
file is memory-mapped and only the protobuf fields that lead to the weights are walked (the
wire format: a key varint ``field << 3 | wire type``, then the value; length-delimited values
are skipped over unread): ``ModelProto.graph`` (7) -> ``GraphProto.initializer`` (5) ->
``TensorProto`` ``dims`` (1), ``data_type`` (2), ``name`` (8), ``raw_data`` (9),
``external_data`` (13), ``data_location`` (14). Each weight is then read once from the file
into an aligned array of its own (``raw_data`` sits at any byte offset in the file).

Only what ``onnx``'s reader would return as a plain numeric NumPy array is read: tensors stored
in ``raw_data`` (what ``onnx.numpy_helper.from_array`` and the exporters write) or in an external
data file next to the model; tensors held in the typed fields (``float_data``, ...), split into
segments, of strings or of types NumPy lacks (bfloat16, float8, 4-bit) are left out, and ONNX
Runtime reads those itself.
"""

from __future__ import annotations

import io
import mmap
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# TensorProto.DataType -> NumPy (little-endian, as ONNX stores raw data)
_DTYPES = {
    1: "<f4",
    2: "u1",
    3: "i1",
    4: "<u2",
    5: "<i2",
    6: "<i4",
    7: "<i8",
    9: "?",
    10: "<f2",
    11: "<f8",
    12: "<u4",
    13: "<u8",
}
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


def read_initializers(path: Path, min_bytes: int = 0) -> dict[str, np.ndarray]:
    """The initializers of the ONNX file at ``path`` of at least ``min_bytes`` bytes, by name
    (see the module's docstring for which ones). Raises ValueError on a malformed file."""
    with path.open("rb", buffering=0) as f:
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            buf = memoryview(mapped)
            try:
                found = [
                    tensor
                    for field, wire, start, end in _fields(buf, 0, len(buf))
                    if field == 7 and wire == _LEN  # ModelProto.graph
                    for g_field, g_wire, g_start, g_end in _fields(buf, start, end)
                    if g_field == 5
                    and g_wire == _LEN  # GraphProto.initializer
                    and (tensor := _tensor(buf, g_start, g_end, path.parent, min_bytes))
                ]
            finally:
                buf.release()
        # read(), not copies out of the mapping: one copy from the page cache, no page faults
        return {name: _read(f, array, offset) for name, array, offset in found}


def _read(f: io.FileIO, array: np.ndarray, offset: int | None) -> np.ndarray:
    """``array`` itself when it holds data already, else filled from ``f`` at ``offset``."""
    if offset is not None:
        f.seek(offset)
        if f.readinto(array.data.cast("B")) != array.nbytes:
            raise ValueError("truncated ONNX file")
    return array


def _tensor(
    buf: memoryview, start: int, end: int, folder: Path, min_bytes: int
) -> tuple[str, np.ndarray, int | None] | None:
    """``(name, array, offset)``: an empty array to fill from the file at ``offset``, or an
    external tensor's array read already (offset None); None for a tensor left out."""
    dims: list[int] = []
    data_type, name, raw, location, segmented = 0, "", None, 0, False
    external: dict[str, str] = {}
    for field, wire, s, e in _fields(buf, start, end):
        if field == 1 and wire == _VARINT:
            dims.append(s)
        elif field == 1 and wire == _LEN:  # packed dims
            i = s
            while i < e:
                value, i = _varint(buf, i)
                dims.append(value)
        elif field == 2 and wire == _VARINT:
            data_type = s
        elif field == 3:
            segmented = True
        elif field == 8 and wire == _LEN:
            name = bytes(buf[s:e]).decode()
        elif field == 9 and wire == _LEN:
            raw = (s, e)
        elif field == 13 and wire == _LEN:  # StringStringEntryProto: key 1, value 2
            entry = {f: bytes(buf[a:b]).decode() for f, w, a, b in _fields(buf, s, e) if w == _LEN}
            external[entry.get(1, "")] = entry.get(2, "")
        elif field == 14 and wire == _VARINT:
            location = s
    dtype = _DTYPES.get(data_type)
    if dtype is None or segmented or not name or any(d < 0 for d in dims):
        return None
    itemsize = np.dtype(dtype).itemsize
    count = int(np.prod(dims, dtype=np.int64))
    if count * itemsize < max(min_bytes, 1):
        return None
    native = np.dtype(dtype).newbyteorder("=")
    if location == _EXTERNAL:
        array = _external(external, folder, dtype, count)
        return None if array is None else (name, array.astype(native).reshape(dims), None)
    if raw is None or raw[1] - raw[0] != count * itemsize or native != np.dtype(dtype):
        return None  # (a big-endian host would need a byte swap: left to ONNX Runtime)
    return name, np.empty(dims, dtype=native), raw[0]


def _external(entries: dict[str, str], folder: Path, dtype: str, count: int) -> np.ndarray | None:
    """The tensor's bytes from its external data file, which must lie inside ``folder`` (the
    model's), as ONNX requires; None when they cannot be read (ONNX Runtime then reports it)."""
    try:
        target = (folder / entries["location"]).resolve()
        offset = int(entries.get("offset", "0"))
        length = int(entries.get("length", str(count * np.dtype(dtype).itemsize)))
    except (KeyError, ValueError, OSError):
        return None
    if not target.is_relative_to(folder.resolve()) or length != count * np.dtype(dtype).itemsize:
        return None
    try:
        array = np.fromfile(target, dtype=dtype, count=count, offset=offset)
    except (OSError, ValueError):
        return None
    return array if array.size == count else None


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field, wire type, a, b)`` per field of the message in ``buf[start:end]``: for a
    varint ``a`` is its value, for a length-delimited field ``buf[a:b]`` its bytes, for fixed
    32/64-bit fields ``a`` their offset."""
    i = start
    while i < end:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, i = _varint(buf, i)
            yield field, wire, value, i
        elif wire == _LEN:
            length, i = _varint(buf, i)
            if i + length > end:
                raise ValueError("truncated protobuf field")
            yield field, wire, i, i + length
            i += length
        elif wire == _I64:
            yield field, wire, i, i + 8
            i += 8
        elif wire == _I32:
            yield field, wire, i, i + 4
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    if i != end:
        raise ValueError("truncated protobuf message")


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated protobuf varint")
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i
