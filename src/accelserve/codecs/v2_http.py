"""KServe V2 (Open Inference Protocol) REST bodies, with Triton's binary tensor data extension.

A request body is a JSON object, optionally followed by raw tensor bytes: when the
``Inference-Header-Content-Length`` HTTP header gives the JSON's length, every input whose
parameters carry ``binary_data_size`` takes that many bytes after the JSON, in input order.
Binary tensors are little-endian, row-major and unpadded; BOOL is one byte (0 or 1); a BYTES
element is a 4-byte little-endian length followed by that many bytes. Responses use the same
layout for outputs asked for in binary (``binary_data`` per output, ``binary_data_output`` for
the whole request).

Speed: orjson parses and renders. JSON data reaches NumPy in one ``np.asarray`` call after a
C-level type check (``set(map(type, data))``: NumPy alone would accept "7" or 1.5 for INT32);
binary inputs are zero-copy arrays over the body's buffer. Only BYTES loops per element.

Nesting guard (JSON deeper than MAX_JSON_DEPTH is rejected) without walking the document: every
request field is type-checked, so deep nesting can only hide in ``data``, in parameter values and
in unknown keys. ``data`` that converts cleanly is at most 4 + 64 deep (NumPy's dimension limit);
data that does not convert is diagnosed by a walk that stops at the limit; parameter values and
unknown keys are small and walked with the same bound. orjson itself stops at 1024 levels.
"""

from __future__ import annotations

import math
import struct
import sys
from dataclasses import dataclass
from itertools import chain
from typing import Any

import ml_dtypes
import numpy as np
import orjson

from accelserve.errors import InvalidArgumentError, ModelExecutionError
from accelserve.types import NUMPY_TO_V2, V2_TO_NUMPY

MAX_JSON_DEPTH = 100
MAX_DIMS = 64  # NumPy's limit on the number of dimensions of an array
INT64_MAX = 2**63 - 1
_MAX_EXTENT = INT64_MAX // 8  # elements whose byte size (8-byte items at most) fits int64
# Far above what a 64 MiB body can carry; this guards the shape arithmetic, not memory.
DEFAULT_MAX_ELEMENTS = 2**32

_OPT = orjson.OPT_SERIALIZE_NUMPY
_LENGTH = struct.Struct("<I")
_DATA_DEPTH = 4  # body{ inputs[ input{ data[
_VALID = ", ".join(V2_TO_NUMPY)
# The wire is little-endian: native dtypes on little-endian hosts (no copies, plain reprs).
_WIRE: dict[str, np.dtype] = (
    V2_TO_NUMPY
    if sys.byteorder == "little"
    else {k: v.newbyteorder("<") for k, v in V2_TO_NUMPY.items()}
)
_CONTAINERS = (dict, list)
_NARROW_FLOATS = frozenset({"FP16", "FP32", "BF16"})
_LISTS_ONLY = {list}

# Which JSON value types each datatype accepts (bool is not an int here, unlike in Python).
_INTS: frozenset[type] = frozenset({int})
_NUMBERS: frozenset[type] = frozenset({int, float})
_ALLOWED: dict[str, frozenset[type]] = dict.fromkeys(V2_TO_NUMPY, _INTS)
_ALLOWED.update(dict.fromkeys(("FP16", "FP32", "FP64", "BF16"), _NUMBERS))
_ALLOWED.update(BOOL=frozenset({bool}), BYTES=frozenset({str}))
_KIND_NAMES = {
    frozenset({bool}): "JSON booleans (true/false)",
    frozenset({str}): "JSON strings",
    _NUMBERS: "JSON numbers",
    _INTS: "JSON integers",
}


@dataclass(slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request did not say (binary_data_output decides)


@dataclass(slots=True)
class DecodedRequest:
    id: str
    inputs: dict[str, np.ndarray]
    outputs: list[RequestedOutput]
    parameters: dict[str, object]  # request-level parameters (priority, timeout, ...)
    binary_data_output: bool


# ---------------------------------------------------------------------------------- JSON


def encode_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPT)


def decode_json(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON body with the same errors and nesting limit as the infer route."""
    obj = _loads(body, "request body")
    if type(obj) in _CONTAINERS:
        # Depth can pass the limit only if there are more openers than the limit.
        if isinstance(body, str):
            openers = body.count("[") + body.count("{")
        else:
            raw = body if isinstance(body, bytes | bytearray) else bytes(body)
            openers = raw.count(b"[") + raw.count(b"{")
        if openers > MAX_JSON_DEPTH:
            _check_depth(obj, 1, "request body")
    return obj


def _loads(data: Any, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg or "recursion" in exc.msg:
            raise _too_deep(f"{what}, at char {exc.pos}") from None
        raise InvalidArgumentError(
            f"malformed JSON in {what}: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(char {exc.pos})"
        ) from None


def _too_deep(where: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"JSON nested deeper than the limit of {MAX_JSON_DEPTH} levels ({where})"
    )


def _check_depth(value: Any, depth: int, where: str) -> None:
    """Raise if the container ``value``, itself at nesting level ``depth``, goes too deep."""
    if depth > MAX_JSON_DEPTH:
        raise _too_deep(where)
    for child in value.values() if type(value) is dict else value:
        if type(child) in _CONTAINERS:
            _check_depth(child, depth + 1, where)


def _check_values(mapping: dict[str, Any], depth: int, owner: str) -> None:
    """Depth-check a parameters object at level ``depth`` (its owner's name is built lazily)."""
    for key, value in mapping.items():
        if type(value) in _CONTAINERS:
            _check_depth(value, depth + 1, f"{owner} parameter '{key}'")


_SCALAR_KINDS: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
}
_CONTAINER_KINDS: dict[type, str] = {dict: "an object", list: "an array"}


def _describe(value: Any) -> str:
    """Name a JSON value's kind and show a short rendering of it."""
    if value is None:
        return "null"
    kind = _SCALAR_KINDS.get(type(value))
    if kind is None:
        return _CONTAINER_KINDS.get(type(value), type(value).__name__)
    text = orjson.dumps(value).decode()
    return f"{kind} {text if len(text) <= 40 else text[:37] + '...'}"


# ------------------------------------------------------------------------------- request


def decode_infer_request(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> DecodedRequest:
    """Decode a V2 infer request body; every malformed part raises InvalidArgumentError."""
    if isinstance(body, memoryview) and (body.ndim != 1 or body.itemsize != 1):
        body = body.cast("B")
    size = len(body)
    if header_length is None:
        obj = _loads(body, "request body")
        json_end = size
    else:
        if type(header_length) is not int or header_length < 0:
            raise InvalidArgumentError(
                f"Inference-Header-Content-Length: expected a non-negative integer; "
                f"received {header_length!r}"
            )
        if header_length > size:
            raise InvalidArgumentError(
                f"Inference-Header-Content-Length is {header_length} bytes, past the end of "
                f"the request body, which has {size} bytes"
            )
        obj = _loads(body[:header_length], f"request JSON header (first {header_length} bytes)")
        json_end = header_length
    if type(obj) is not dict:
        raise InvalidArgumentError(
            f"request body: expected a JSON object with 'inputs'; received {_describe(obj)}"
        )

    request_id = obj.get("id", "")
    if type(request_id) is not str:
        raise InvalidArgumentError(
            f"request 'id': expected a string; received {_describe(request_id)}"
        )
    parameters = obj.get("parameters")
    if parameters is None:
        parameters = {}
    elif type(parameters) is not dict:
        raise InvalidArgumentError(
            f"request 'parameters': expected an object; received {_describe(parameters)}"
        )
    else:
        _check_values(parameters, 2, "request")
    binary_output = parameters.get("binary_data_output", False)
    if type(binary_output) is not bool:
        raise InvalidArgumentError(
            f"request parameter 'binary_data_output': expected true or false; "
            f"received {_describe(binary_output)}"
        )
    outputs = obj.get("outputs")
    requested = [] if outputs is None else _requested_outputs(outputs)
    inputs = obj.get("inputs")
    if type(inputs) is not list:
        received = "nothing" if inputs is None else _describe(inputs)
        raise InvalidArgumentError(
            f"request 'inputs': expected a list of input objects; received {received}"
        )
    known = 1 + ("id" in obj) + ("parameters" in obj) + ("outputs" in obj)
    if len(obj) > known:  # unknown keys are ignored, but not allowed to nest without bound
        _check_unknown(obj, ("id", "parameters", "outputs", "inputs"), 1, "request")

    arrays: dict[str, np.ndarray] = {}
    offset = json_end
    for index, spec in enumerate(inputs):
        name, array, binary_size = _decode_input(
            index, spec, body, offset, header_length, max_elements
        )
        if name in arrays:
            raise InvalidArgumentError(f"input '{name}' appears more than once in 'inputs'")
        arrays[name] = array
        offset += binary_size
    if offset != size:
        raise InvalidArgumentError(
            f"request body has {size - json_end} bytes after the JSON header but the inputs' "
            f"binary_data_size values add up to {offset - json_end}"
        )
    return DecodedRequest(request_id, arrays, requested, parameters, binary_output)


_INPUT_KEYS = ("name", "datatype", "shape", "data", "parameters")


def _decode_input(
    index: int,
    spec: Any,
    body: bytes | bytearray | memoryview,
    offset: int,
    header_length: int | None,
    max_elements: int,
) -> tuple[str, np.ndarray, int]:
    """One entry of 'inputs' -> (name, array, bytes of binary data it used)."""
    if type(spec) is not dict:
        raise InvalidArgumentError(
            f"inputs[{index}]: expected an object with name, datatype, shape and data; "
            f"received {_describe(spec)}"
        )
    name = spec.get("name")
    if type(name) is not str or not name:
        raise InvalidArgumentError(
            f"inputs[{index}] 'name': expected a non-empty string; received {_describe(name)}"
        )
    datatype = spec.get("datatype")
    if type(datatype) is not str or datatype not in V2_TO_NUMPY:
        received = "nothing" if datatype is None else _describe(datatype)
        raise InvalidArgumentError(
            f"input '{name}' 'datatype': expected one of {_VALID}; received {received}"
        )
    shape: Any = spec.get("shape")
    count = _element_count(name, shape, max_elements)
    params = spec.get("parameters")
    binary_size = None if params is None else _input_parameters(name, params)
    has_data = "data" in spec
    if len(spec) > 3 + has_data + (params is not None):
        _check_unknown(spec, _INPUT_KEYS, 3, f"input '{name}'")
    if binary_size is None:
        if not has_data:
            raise InvalidArgumentError(
                f"input '{name}': expected 'data' or parameters.binary_data_size; received neither"
            )
        return name, _json_tensor(name, datatype, shape, count, spec["data"]), 0
    if has_data:
        raise InvalidArgumentError(
            f"input '{name}': expected either 'data' or parameters.binary_data_size; received both"
        )
    if header_length is None:
        raise InvalidArgumentError(
            f"input '{name}' has binary_data_size {binary_size} but the request has no "
            f"Inference-Header-Content-Length header, so the whole body was read as JSON"
        )
    array = _binary_tensor(name, datatype, shape, count, body, offset, binary_size)
    return name, array, binary_size


def _element_count(name: str, shape: Any, max_elements: int) -> int:
    if type(shape) is not list:
        received = "nothing" if shape is None else _describe(shape)
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
                f"{orjson.dumps(shape).decode()} (dimension {axis} is {_describe(dim)}, "
                f"{problem})"
            )


def _input_parameters(name: str, params: Any) -> int | None:
    if type(params) is not dict:
        raise InvalidArgumentError(
            f"input '{name}' 'parameters': expected an object; received {_describe(params)}"
        )
    if "shared_memory_region" in params:
        raise InvalidArgumentError(
            f"input '{name}': shared memory (parameters.shared_memory_region) is not "
            f"supported; expected the data in the request body"
        )
    _check_values(params, 4, "input '" + name + "'")
    size = params.get("binary_data_size")
    if size is not None and (type(size) is not int or size < 0):
        raise InvalidArgumentError(
            f"input '{name}' parameter 'binary_data_size': expected a non-negative integer; "
            f"received {_describe(size)}"
        )
    return size


def _check_unknown(obj: dict[str, Any], known: tuple[str, ...], depth: int, where: str) -> None:
    for key, value in obj.items():
        if key not in known and type(value) in _CONTAINERS:
            _check_depth(value, depth + 1, f"{where} field '{key}'")


def _requested_outputs(outputs: Any) -> list[RequestedOutput]:
    if type(outputs) is not list:
        raise InvalidArgumentError(
            f"request 'outputs': expected a list of output objects; received {_describe(outputs)}"
        )
    requested: list[RequestedOutput] = []
    seen: set[str] = set()
    for index, spec in enumerate(outputs):
        if type(spec) is not dict:
            raise InvalidArgumentError(
                f"outputs[{index}]: expected an object with a name; received {_describe(spec)}"
            )
        name = spec.get("name")
        if type(name) is not str or not name:
            raise InvalidArgumentError(
                f"outputs[{index}] 'name': expected a non-empty string; received {_describe(name)}"
            )
        if name in seen:
            raise InvalidArgumentError(f"output '{name}' is requested more than once in 'outputs'")
        seen.add(name)
        binary = None
        params = spec.get("parameters")
        if params is not None:
            binary = _output_parameters(name, params)
        if len(spec) > 1 + ("parameters" in spec):
            _check_unknown(spec, ("name", "parameters"), 3, f"output '{name}'")
        requested.append(RequestedOutput(name, binary))
    return requested


def _output_parameters(name: str, params: Any) -> bool | None:
    if type(params) is not dict:
        raise InvalidArgumentError(
            f"output '{name}' 'parameters': expected an object; received {_describe(params)}"
        )
    _check_values(params, 4, "output '" + name + "'")
    binary = params.get("binary_data")
    if binary is not None and type(binary) is not bool:
        raise InvalidArgumentError(
            f"output '{name}' parameter 'binary_data': expected true or false; "
            f"received {_describe(binary)}"
        )
    if params.get("classification"):
        raise InvalidArgumentError(
            f"output '{name}': the classification extension is not supported; expected no "
            f"'classification' parameter, received {_describe(params['classification'])}"
        )
    if "shared_memory_region" in params:
        raise InvalidArgumentError(
            f"output '{name}': shared memory (parameters.shared_memory_region) is not "
            f"supported; expected the data in the response body"
        )
    return binary


# --------------------------------------------------------------------- JSON tensor data


def _json_tensor(name: str, datatype: str, shape: list[int], count: int, data: Any) -> np.ndarray:
    if type(data) is not list:
        raise InvalidArgumentError(
            f"input '{name}' 'data': expected a JSON array; received {_describe(data)}"
        )
    allowed = _ALLOWED[datatype]
    flat = _fast_flatten(data)
    if flat is None or not set(map(type, flat)) <= allowed:
        flat = []
        _flatten_checked(data, flat, _DATA_DEPTH, name, datatype, allowed)
    if len(flat) != count:
        raise InvalidArgumentError(
            f"input '{name}': data does not fill shape {shape}: expected {count} elements, "
            f"received {len(flat)}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [text.encode() for text in flat]
        return array.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    try:
        if datatype in _NARROW_FLOATS:  # a finite JSON number may not fit: reject, not inf
            with np.errstate(over="raise"):
                array = np.asarray(flat, dtype=dtype)
            if datatype == "BF16" and np.isinf(array).any():  # ml_dtypes ignores errstate
                raise FloatingPointError
        else:
            array = np.asarray(flat, dtype=dtype)
    except (OverflowError, FloatingPointError, ValueError, TypeError):
        raise _out_of_range(name, datatype, dtype, flat) from None
    return array.reshape(shape)


def _fast_flatten(data: list[Any]) -> list[Any] | None:
    """Row-major flatten of regularly nested lists at C speed; None: take the checked path."""
    if not data or type(data[0]) is not list:
        return data
    levels, probe = 0, data
    while probe and type(probe[0]) is list:
        probe, levels = probe[0], levels + 1
        if levels + _DATA_DEPTH > MAX_JSON_DEPTH:
            return None
    flat = data
    for _ in range(levels):
        if set(map(type, flat)) != _LISTS_ONLY:  # a string here would flatten into chars
            return None
        flat = list(chain.from_iterable(flat))
    return flat


def _flatten_checked(
    items: list[Any], out: list[Any], depth: int, name: str, datatype: str, allowed: frozenset
) -> None:
    """Flatten any nesting, checking each leaf's kind and the nesting depth."""
    if depth > MAX_JSON_DEPTH:
        raise _too_deep(f"'data' of input '{name}'")
    for item in items:
        if type(item) is list:
            _flatten_checked(item, out, depth + 1, name, datatype, allowed)
        elif type(item) in allowed:
            out.append(item)
        else:
            raise InvalidArgumentError(
                f"input '{name}': {datatype} data must be {_KIND_NAMES[allowed]}; "
                f"received {_describe(item)} at element {len(out)}"
            )


def _out_of_range(name: str, datatype: str, dtype: np.dtype, flat: list[Any]) -> Exception:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        for index, value in enumerate(flat):
            if not info.min <= value <= info.max:
                return InvalidArgumentError(
                    f"input '{name}': {datatype} values must lie in [{info.min}, {info.max}]; "
                    f"received {value} at element {index}"
                )
    else:
        with np.errstate(over="ignore"):
            overflowed = np.isinf(np.asarray(flat, dtype=np.float64).astype(dtype))
        if overflowed.any():
            index = int(np.argmax(overflowed))
            limit = float(
                np.finfo(np.float32).max
                if datatype == "FP32"
                else 65504.0
                if datatype == "FP16"
                else ml_dtypes.finfo(dtype).max
            )
            return InvalidArgumentError(
                f"input '{name}': {datatype} values must lie within +-{limit:g}; "
                f"received {flat[index]!r} at element {index}"
            )
    return InvalidArgumentError(f"input '{name}': data cannot be converted to {datatype}")


# ------------------------------------------------------------------- binary tensor data


def _binary_tensor(
    name: str,
    datatype: str,
    shape: list[int],
    count: int,
    body: bytes | bytearray | memoryview,
    offset: int,
    nbytes: int,
) -> np.ndarray:
    end = offset + nbytes
    if datatype != "BYTES":
        itemsize = V2_TO_NUMPY[datatype].itemsize
        if nbytes != count * itemsize:
            raise InvalidArgumentError(
                f"input '{name}' binary_data_size: expected {count * itemsize} bytes "
                f"({count} {datatype} elements of {itemsize} bytes for shape {shape}); "
                f"received {nbytes}"
            )
    if end > len(body):
        raise InvalidArgumentError(
            f"input '{name}' binary_data_size {nbytes} runs past the end of the body: its "
            f"data would end at byte {end} but the body has {len(body)} bytes"
        )
    if datatype == "BYTES":
        return _bytes_elements(name, shape, count, body, offset, end)
    # A read-only (for bytes bodies) view of the body: no copy.
    array = np.ndarray(shape, _WIRE[datatype], body, offset)
    if datatype == "BOOL":
        _check_bool_bytes(name, array, "binary")
    return array


def _check_bool_bytes(name: str, array: np.ndarray, what: str) -> None:
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


def _bytes_elements(
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
    unpack = _LENGTH.unpack_from
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


# ------------------------------------------------------------------------------ response


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: dict[str, np.ndarray],
    requested: list[RequestedOutput],
    binary_data_output: bool,
) -> tuple[bytes, int | None]:
    """Render a response; returns (body, JSON header length, or None when all is JSON)."""
    if requested:
        selection = [
            (r.name, binary_data_output if r.binary is None else r.binary) for r in requested
        ]
    else:
        selection = [(name, binary_data_output) for name in outputs]
    entries: list[dict[str, Any]] = []
    buffers: list[Any] = []
    for name, binary in selection:
        array = outputs.get(name)
        if array is None:
            raise InvalidArgumentError(
                f"requested output '{name}' is not an output of model '{model_name}'; "
                f"expected one of {', '.join(outputs)}"
            )
        if type(array) is not np.ndarray:  # e.g. a NumPy scalar from a backend
            array = np.asarray(array)
        datatype = _output_datatype(model_name, name, array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            raw = _output_bytes(model_name, name, array, datatype)
            entry["parameters"] = {
                "binary_data_size": len(raw) if type(raw) is bytes else raw.nbytes
            }
            buffers.append(raw)
        else:
            entry["data"] = _output_json(model_name, name, array, datatype)
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id:
        response["id"] = request_id
    response["outputs"] = entries
    header = orjson.dumps(response, option=_OPT)
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


def _output_datatype(model_name: str, name: str, array: np.ndarray) -> str:
    dtype = array.dtype
    if dtype.kind in "OSU":
        return "BYTES"
    datatype = NUMPY_TO_V2.get(dtype if dtype.isnative else dtype.newbyteorder("="))
    if datatype is not None:
        return datatype
    raise ModelExecutionError(
        f"output '{name}' of model '{model_name}' has dtype {array.dtype}, which the V2 "
        f"protocol cannot carry; expected one of {_VALID}"
    )


def _output_json(model_name: str, name: str, array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        return [_as_text(model_name, name, i, e) for i, e in enumerate(array.ravel().tolist())]
    if datatype == "BF16":  # orjson renders no bfloat16; float32 holds every value exactly
        return array.astype(np.float32).ravel()
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return array.ravel()  # contiguous (a copy if it was not): what orjson needs


def _as_text(model_name: str, name: str, index: int, element: Any) -> str:
    if isinstance(element, str):
        return element
    if isinstance(element, bytes):
        try:
            return element.decode()
        except UnicodeDecodeError:
            raise InvalidArgumentError(
                f"output '{name}' of model '{model_name}': element {index} is not valid UTF-8, "
                f"so it cannot be returned as JSON; request the output with binary_data true"
            ) from None
    raise ModelExecutionError(
        f"output '{name}' of model '{model_name}' is BYTES but element {index} is a "
        f"{type(element).__name__}; expected bytes or str"
    )


def _output_bytes(model_name: str, name: str, array: np.ndarray, datatype: str) -> Any:
    if datatype == "BYTES":
        parts: list[bytes] = []
        pack = _LENGTH.pack
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
    wire = _WIRE[datatype]
    if array.dtype != wire:
        array = array.astype(wire)
    # A flat uint8 view of C-contiguous data: joined into the body without an extra copy.
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)
