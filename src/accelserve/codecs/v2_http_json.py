"""JSON for the V2 REST codec: documents both ways (orjson) and JSON tensor data -> NumPy.

Speed: orjson parses and renders. JSON data reaches NumPy in one ``np.asarray`` call after a
C-level type check (``set(map(type, data))``: NumPy alone would accept "7" or 1.5 for INT32).

Nesting guard (JSON deeper than MAX_JSON_DEPTH is rejected) without walking the document: every
request field is type-checked, so deep nesting can only hide in ``data``, in parameter values and
in unknown keys. ``data`` that converts cleanly is at most 4 + 64 deep (NumPy's dimension limit);
data that does not convert is diagnosed by a walk that stops at the limit; parameter values and
unknown keys are small and walked with the same bound. orjson itself stops at 1024 levels.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import ml_dtypes
import numpy as np
import orjson

from accelserve.codecs.v2 import describe
from accelserve.errors import InvalidArgumentError
from accelserve.types import V2_TO_NUMPY

MAX_JSON_DEPTH = 100

_OPT = orjson.OPT_SERIALIZE_NUMPY
_DATA_DEPTH = 4  # body{ inputs[ input{ data[
_CONTAINERS = (dict, list)
_NARROW_FLOATS = frozenset({"FP16", "FP32", "BF16"})
_LISTS_ONLY = {list}

# Which JSON value types each datatype accepts (bool is not an int here, unlike in Python).
_INTS: frozenset[type] = frozenset({int})
_NUMBERS: frozenset[type] = frozenset({int, float})
_ALLOWED: dict[str, frozenset[type]] = dict.fromkeys(V2_TO_NUMPY, _INTS)
_ALLOWED.update(dict.fromkeys(("FP16", "FP32", "FP64", "BF16"), _NUMBERS))
_ALLOWED.update(BOOL=frozenset({bool}), BYTES=frozenset({str}))
# The largest finite value of each float type (ml_dtypes types no finfo: hence the ignore).
_FLOAT_MAX: dict[str, float] = {
    "FP16": 65504.0,
    "FP32": float(np.finfo(np.float32).max),
    "FP64": float(np.finfo(np.float64).max),
    "BF16": float(ml_dtypes.finfo(ml_dtypes.bfloat16).max),  # type: ignore[no-untyped-call]
}
_KIND_NAMES = {
    frozenset({bool}): "JSON booleans (true/false)",
    frozenset({str}): "JSON strings",
    _NUMBERS: "JSON numbers",
    _INTS: "JSON integers",
}


def encode_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=_OPT)


def decode_json(body: bytes | bytearray | memoryview | str) -> Any:
    """Parse a JSON body with the same errors and nesting limit as the infer route."""
    obj = loads(body, "request body")
    if type(obj) in _CONTAINERS:
        # Depth can pass the limit only if there are more openers than the limit.
        if isinstance(body, str):
            openers = body.count("[") + body.count("{")
        else:
            raw = body if isinstance(body, bytes | bytearray) else bytes(body)
            openers = raw.count(b"[") + raw.count(b"{")
        if openers > MAX_JSON_DEPTH:
            check_depth(obj, 1, "request body")
    return obj


def loads(data: Any, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth" in exc.msg or "recursion" in exc.msg:
            raise too_deep(f"{what}, at char {exc.pos}") from None
        raise InvalidArgumentError(
            f"malformed JSON in {what}: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(char {exc.pos})"
        ) from None


def too_deep(where: str) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"JSON nested deeper than the limit of {MAX_JSON_DEPTH} levels ({where})"
    )


def check_depth(value: Any, depth: int, where: str) -> None:
    """Raise if the container ``value``, itself at nesting level ``depth``, goes too deep."""
    if depth > MAX_JSON_DEPTH:
        raise too_deep(where)
    for child in value.values() if type(value) is dict else value:
        if type(child) in _CONTAINERS:
            check_depth(child, depth + 1, where)


def check_values(mapping: dict[str, Any], depth: int, owner: str) -> None:
    """Depth-check a parameters object at level ``depth`` (its owner's name is built lazily)."""
    for key, value in mapping.items():
        if type(value) in _CONTAINERS:
            check_depth(value, depth + 1, f"{owner} parameter '{key}'")


def check_unknown(obj: dict[str, Any], known: tuple[str, ...], depth: int, where: str) -> None:
    for key, value in obj.items():
        if key not in known and type(value) in _CONTAINERS:
            check_depth(value, depth + 1, f"{where} field '{key}'")


# --------------------------------------------------------------------- JSON tensor data


def json_tensor(name: str, datatype: str, shape: list[int], count: int, data: Any) -> np.ndarray:
    if type(data) is not list:
        raise InvalidArgumentError(
            f"input '{name}' 'data': expected a JSON array; received {describe(data)}"
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
    items: list[Any], out: list[Any], depth: int, name: str, datatype: str, allowed: frozenset[type]
) -> None:
    """Flatten any nesting, checking each leaf's kind and the nesting depth."""
    if depth > MAX_JSON_DEPTH:
        raise too_deep(f"'data' of input '{name}'")
    for item in items:
        if type(item) is list:
            _flatten_checked(item, out, depth + 1, name, datatype, allowed)
        elif type(item) in allowed:
            out.append(item)
        else:
            raise InvalidArgumentError(
                f"input '{name}': {datatype} data must be {_KIND_NAMES[allowed]}; "
                f"received {describe(item)} at element {len(out)}"
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
            limit = _FLOAT_MAX[datatype]
            return InvalidArgumentError(
                f"input '{name}': {datatype} values must lie within +-{limit:g}; "
                f"received {flat[index]!r} at element {index}"
            )
    return InvalidArgumentError(f"input '{name}': data cannot be converted to {datatype}")
