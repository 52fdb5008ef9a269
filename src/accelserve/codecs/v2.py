"""What the KServe V2 codecs of both transports share: the decoded request, the checks on a
tensor's datatype and shape, and the binary tensor layout.

Both decoders return a ``DecodedRequest``: the ``InferRequest`` the data plane runs, whose
``outputs`` are ``RequestedOutput``s carrying the per-output options, so the frontends handle
requests from either wire the same way.

Binary tensor data (HTTP's binary extension, gRPC's ``raw_input_contents`` and
``raw_output_contents``) is little-endian, row-major and unpadded; BOOL is one byte (0 or 1); a
BYTES element is a 4-byte little-endian length followed by that many bytes. The checks and their
error texts live here once, so a bad tensor gets the same answer over either protocol.
"""

from __future__ import annotations

import math
import struct
import sys
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
import orjson

from accelserve.errors import InvalidArgumentError, ModelExecutionError
from accelserve.shared_memory import SharedMemoryRef
from accelserve.types import NUMPY_TO_V2, V2_TO_NUMPY, InferRequest

MAX_DIMS = 64  # NumPy's limit on the number of dimensions of an array
INT64_MAX = 2**63 - 1
_MAX_EXTENT = INT64_MAX // 8  # elements whose byte size (8-byte items at most) fits int64
# Far above what a 64 MiB body can carry; this guards the shape arithmetic, not memory.
DEFAULT_MAX_ELEMENTS = 2**32

LENGTH = struct.Struct("<I")  # a BYTES element's length prefix
VALID_DATATYPES = ", ".join(V2_TO_NUMPY)
# The wire is little-endian: native dtypes on little-endian hosts (no copies, plain reprs).
WIRE: dict[str, np.dtype] = (
    V2_TO_NUMPY
    if sys.byteorder == "little"
    else {k: v.newbyteorder("<") for k, v in V2_TO_NUMPY.items()}
)


class RequestedOutput(str):
    """An output a request asks for, with its options: the string is the output's name.

    ``binary`` is HTTP's ``binary_data``: None when the request did not say (``binary_data_output``
    decides); gRPC responses are always raw. A str, so that a request's list of them is the
    data plane's list of output names as it is, with no second list per request. It equals a
    plain str of its name, and another ``RequestedOutput`` only when the options match too.
    ``shared`` is the shared-memory window the output is written to (``codecs.v2_shared_memory``),
    None for an output sent in the response; ``classification`` the k of Triton's
    classification extension (0: the tensor itself; ``accelserve.classification``).
    """

    binary: bool | None
    shared: SharedMemoryRef | None
    classification: int

    def __new__(
        cls,
        name: str,
        binary: bool | None = None,
        shared: SharedMemoryRef | None = None,
        classification: int = 0,
    ) -> Self:
        output = super().__new__(cls, name)
        output.binary = binary
        output.shared = shared
        output.classification = classification
        return output

    @property
    def name(self) -> str:
        return str.__str__(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RequestedOutput):
            return (
                str.__eq__(self, other)
                and self.binary == other.binary
                and self.shared == other.shared
                and self.classification == other.classification
            )
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = str.__hash__

    def __repr__(self) -> str:
        shared = "" if self.shared is None else f", shared={self.shared}"
        if self.classification:
            shared += f", classification={self.classification}"
        return f"RequestedOutput({str.__repr__(self)}, binary={self.binary}{shared})"


@dataclass(slots=True)
class DecodedRequest(InferRequest):
    """An infer request off either V2 wire: what the data plane runs, and how to answer it."""

    outputs: list[RequestedOutput] = field(default_factory=list)  # empty: all, in model order
    binary_data_output: bool = False  # HTTP: binary for outputs whose binary is None
    # inputs whose data is in shared memory (codecs.v2_shared_memory.SharedInput), by name:
    # the frontend reads them into ``inputs`` before inference
    shared_inputs: dict[str, Any] = field(default_factory=dict)


def classification_count(owner: str, value: object) -> int:
    """An output's ``classification`` parameter: how many top classes to return (>= 1)."""
    if type(value) is not int or value < 1:
        raise InvalidArgumentError(
            f"{owner} parameter 'classification': expected the number of classes to return "
            f"(a positive integer); received {describe(value)}"
        )
    return value


def uint_parameter(parameters: dict[str, object], key: str) -> int:
    """Request parameter ``key`` (priority, timeout) as a non-negative integer; 0 if absent."""
    value = parameters.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidArgumentError(
            f"parameter '{key}': expected a non-negative integer; received {value!r}"
        )
    return value


_SCALAR_KINDS: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
}
_CONTAINER_KINDS: dict[type, str] = {dict: "an object", list: "an array"}


def describe(value: Any) -> str:
    """Name a JSON value's kind and show a short rendering of it."""
    if value is None:
        return "null"
    kind = _SCALAR_KINDS.get(type(value))
    if kind is None:
        return _CONTAINER_KINDS.get(type(value), type(value).__name__)
    text = orjson.dumps(value).decode()
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


# --------------------------------------------------------------------------------- tensors


def element_count(name: str, shape: Any, max_elements: int) -> int:
    if type(shape) is not list:
        received = "nothing" if shape is None else describe(shape)
        raise InvalidArgumentError(
            f"input '{name}' 'shape': expected a list of non-negative integers; received {received}"
        )
    if len(shape) > MAX_DIMS:
        raise InvalidArgumentError(
            f"input '{name}' 'shape': expected at most {MAX_DIMS} dimensions; received {len(shape)}"
        )
    for dim in shape:
        if type(dim) is not int or dim < 0:
            _bad_dimension(name, shape)
    count = math.prod(shape)
    # Zero-size tensors too: NumPy still multiplies the other dimensions by the item size.
    extent = count or math.prod(d for d in shape if d)
    if extent > _MAX_EXTENT:
        raise InvalidArgumentError(
            f"input '{name}' 'shape' {shape}: its element count overflows int64 (at most "
            f"{_MAX_EXTENT} elements, so that byte sizes fit); received {extent}"
        )
    if extent > max_elements:
        raise InvalidArgumentError(
            f"input '{name}' 'shape' {shape}: {extent} elements"
            f"{' (zero dimensions aside)' if not count else ''}, above the limit of "
            f"{max_elements}"
        )
    return count


def _bad_dimension(name: str, shape: list[Any]) -> None:
    for axis, dim in enumerate(shape):
        if type(dim) is not int or dim < 0:
            problem = "negative" if type(dim) is int else "not an integer"
            raise InvalidArgumentError(
                f"input '{name}' 'shape': expected a list of non-negative integers; received "
                f"{orjson.dumps(shape).decode()} (dimension {axis} is {describe(dim)}, "
                f"{problem})"
            )


def check_bool_bytes(name: str, array: np.ndarray, what: str) -> None:
    """BOOL tensors read from bytes (``what``: binary or raw data) hold only 0 and 1."""
    if not array.size:
        return
    raw = array.reshape(-1).view(np.uint8)
    if raw.max() > 1:
        index = int(np.argmax(raw > 1))
        raise InvalidArgumentError(
            f"input '{name}': BOOL {what} data must be bytes 0 or 1; received "
            f"{int(raw[index])} at element {index}"
        )


def bytes_elements(
    name: str,
    shape: list[int],
    count: int,
    body: bytes | bytearray | memoryview,
    start: int,
    end: int,
) -> np.ndarray:
    """BYTES elements, each a 4-byte little-endian length then its bytes."""
    if type(body) is not bytes:  # slicing bytes yields bytes; copy other buffers once
        body, start, end = bytes(memoryview(body)[start:end]), 0, end - start
    unpack = LENGTH.unpack_from
    elements: list[bytes] = []
    append = elements.append
    pos = start
    for index in range(count):
        if pos + 4 > end:
            raise InvalidArgumentError(
                f"input '{name}': BYTES binary data holds {index} of the {count} elements "
                f"shape {shape} needs; expected a 4-byte length prefix at byte {pos - start} "
                f"of its {end - start}-byte buffer"
            )
        (length,) = unpack(body, pos)
        pos += 4
        if pos + length > end:
            raise InvalidArgumentError(
                f"input '{name}': BYTES element {index} has a length prefix of {length} bytes "
                f"that runs past its buffer ({end - pos} bytes remain)"
            )
        append(body[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidArgumentError(
            f"input '{name}' binary_data_size: expected {pos - start} bytes for its {count} "
            f"BYTES elements; received {end - start}"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array.reshape(shape)


def output_tensor(
    model_name: str, name: str, outputs: dict[str, np.ndarray]
) -> tuple[np.ndarray, str]:
    """The output ``name`` as an array, with its V2 datatype; a clear error when the model has
    no such output."""
    array = outputs.get(name)
    if array is None:
        raise InvalidArgumentError(
            f"requested output '{name}' is not an output of model '{model_name}'; "
            f"expected one of {', '.join(outputs)}"
        )
    if type(array) is not np.ndarray:  # e.g. a NumPy scalar from a backend
        array = np.asarray(array)
    return array, output_datatype(model_name, name, array)


def output_datatype(model_name: str, name: str, array: np.ndarray) -> str:
    dtype = array.dtype
    if dtype.kind in "OSU":
        return "BYTES"
    datatype = NUMPY_TO_V2.get(dtype if dtype.isnative else dtype.newbyteorder("="))
    if datatype is not None:
        return datatype
    raise ModelExecutionError(
        f"output '{name}' of model '{model_name}' has dtype {array.dtype}, which the V2 "
        f"protocol cannot carry; expected one of {VALID_DATATYPES}"
    )


def output_bytes(model_name: str, name: str, array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        parts: list[bytes] = []
        pack = LENGTH.pack
        for index, element in enumerate(array.ravel().tolist()):
            if isinstance(element, str):
                element = element.encode()
            elif not isinstance(element, bytes):
                raise ModelExecutionError(
                    f"output '{name}' of model '{model_name}' is BYTES but element {index} is "
                    f"a {type(element).__name__}; expected bytes or str"
                )
            parts.append(pack(len(element)))
            parts.append(element)
        return b"".join(parts)
    wire = WIRE[datatype]
    if array.dtype != wire:
        array = array.astype(wire)
    # A flat uint8 view of C-contiguous data: joined into the body without an extra copy.
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
