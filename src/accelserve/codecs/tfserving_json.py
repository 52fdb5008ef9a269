"""TF Serving's REST predict body <-> NumPy (tensorflow.org/tfx/serving/api_rest).

Request: ``{"signature_name"?, "instances": [...]}`` (row format: one element per example, a
value when the model has one input, else an object keyed by input name) or ``{"inputs": ...}``
(columnar: a value for a one-input model, else an object of whole tensors). Values nest as lists;
a BYTES value is a string (its UTF-8 bytes) or ``{"b64": "<base64>"}``. NaN, Infinity and
-Infinity are accepted as TF Serving accepts them.

Response: row requests get ``{"predictions": ...}`` (a model with one output: its value per
example; else one object per example), columnar ones ``{"outputs": ...}`` (the tensor, or an
object of tensors). A BYTES output is text, or ``{"b64": ...}`` when its name ends in ``_bytes``
(TF Serving's rule) or it is not UTF-8; non-finite floats are written NaN/Infinity as TF Serving
writes them.

Each value is checked against its input's datatype (shared with the V2 JSON codec); which inputs
a model needs and their shapes are checked by the data plane.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import orjson

from accelserve.codecs.v2 import MAX_DIMS, describe
from accelserve.codecs.v2_http_json import decode_json, json_tensor
from accelserve.errors import InvalidArgumentError
from accelserve.types import TensorSpec

ROW, COLUMNAR = "instances", "inputs"
_B64 = "b64"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# The dtypes orjson writes from NumPy arrays directly (native byte order).
_ORJSON_DTYPES = frozenset(
    np.dtype(f"{kind}{bits}") for kind in ("int", "uint") for bits in (8, 16, 32, 64)
) | frozenset(map(np.dtype, ("bool", "float16", "float32", "float64")))


@dataclass(slots=True)
class PredictBody:
    format: str  # ROW or COLUMNAR
    signature_name: str
    inputs: dict[str, np.ndarray]


def decode_predict(body: bytes, specs: Mapping[str, TensorSpec]) -> PredictBody:
    """Parse a predict body into arrays of the datatypes ``specs`` declare."""
    request = _parse(body)
    if not isinstance(request, dict):
        raise InvalidArgumentError(
            f"request body: expected a JSON object; received {describe(request)}"
        )
    signature = request.get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidArgumentError(
            f"signature_name: expected a string; received {describe(signature)}"
        )
    has_row, has_columns = ROW in request, COLUMNAR in request
    if has_row == has_columns:
        which = "both" if has_row else "neither"
        raise InvalidArgumentError(
            f"request body: expected one of 'instances' (row format) or 'inputs' (columnar "
            f"format); received {which}"
        )
    if has_row:
        return PredictBody(ROW, signature, _row_inputs(request[ROW], specs))
    return PredictBody(COLUMNAR, signature, _columnar_inputs(request[COLUMNAR], specs))


def _parse(body: bytes) -> Any:
    try:
        return decode_json(body)
    except InvalidArgumentError:
        try:  # NaN and Infinity: TF Serving's JSON allows them, orjson does not
            return json.loads(body)
        except (ValueError, RecursionError):
            pass
        raise


def _is_b64(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and _B64 in value


def _named(value: Any) -> bool:
    return type(value) is dict and not _is_b64(value)


def _row_inputs(instances: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if type(instances) is not list or not instances:
        raise InvalidArgumentError(
            f"'instances': expected a non-empty list, one element per example; received "
            f"{describe(instances)}"
        )
    if not _named(instances[0]):
        only = _only_input(
            specs, "each element of 'instances' must be an object keyed by input name"
        )
        return {only.name: _tensor(only, instances, "'instances'")}
    columns: dict[str, list[Any]] = {name: [] for name in instances[0]}
    for index, instance in enumerate(instances):
        if not _named(instance):
            raise InvalidArgumentError(
                f"instances[{index}]: expected an object keyed by input name like instances[0]; "
                f"received {describe(instance)}"
            )
        if instance.keys() != columns.keys():
            raise InvalidArgumentError(
                f"instances[{index}]: expected the same inputs as instances[0] "
                f"({', '.join(columns)}); received {', '.join(instance) or 'none'}"
            )
        for name, value in instance.items():
            columns[name].append(value)
    return {
        name: _tensor(_spec(specs, name), values, f"'instances' input '{name}'")
        for name, values in columns.items()
    }


def _columnar_inputs(inputs: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not _named(inputs):
        only = _only_input(specs, "'inputs' must be an object keyed by input name")
        return {only.name: _tensor(only, inputs, "'inputs'")}
    return {
        name: _tensor(_spec(specs, name), value, f"'inputs' input '{name}'")
        for name, value in inputs.items()
    }


def _only_input(specs: Mapping[str, TensorSpec], rule: str) -> TensorSpec:
    if len(specs) != 1:
        raise InvalidArgumentError(f"the model has inputs {', '.join(specs)}: {rule}")
    return next(iter(specs.values()))


def _spec(specs: Mapping[str, TensorSpec], name: str) -> TensorSpec:
    spec = specs.get(name)
    if spec is None:
        raise InvalidArgumentError(
            f"unknown input '{name}'; the model's inputs are {', '.join(specs)}"
        )
    return spec


def _tensor(spec: TensorSpec, value: Any, where: str) -> np.ndarray:
    shape, flat = _shape_and_leaves(value, where)
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = [_bytes(item, where, index) for index, item in enumerate(flat)]
        return array.reshape(shape)
    try:
        return json_tensor(spec.name, spec.datatype, shape, count, flat)
    except InvalidArgumentError:
        objects = [index for index, item in enumerate(flat) if type(item) is dict]
        if objects:
            raise InvalidArgumentError(
                f"{where}: {spec.datatype} values must be JSON numbers or booleans; received "
                f'an object at element {objects[0]} (base64 {{"b64": ...}} is for DT_STRING '
                f"inputs)"
            ) from None
        raise


def _shape_and_leaves(value: Any, where: str) -> tuple[list[int], list[Any]]:
    """The shape of regularly nested lists and their leaves in row-major order; ragged
    nesting (lists of different lengths, or lists beside scalars) is an error naming the depth."""
    shape: list[int] = []
    level = [value]
    while True:
        kinds = set(map(type, level))
        if list not in kinds:
            return shape, level
        if kinds != {list}:
            raise InvalidArgumentError(
                f"{where} is ragged: at depth {len(shape)} some elements are lists and some are "
                f"not; every example must have the same shape"
            )
        lengths = set(map(len, level))
        if len(lengths) != 1:
            raise InvalidArgumentError(
                f"{where} is ragged: lists at depth {len(shape) + 1} have different lengths "
                f"({', '.join(map(str, sorted(lengths)))}); every example must have the same shape"
            )
        shape.append(lengths.pop())
        if len(shape) > MAX_DIMS:
            raise InvalidArgumentError(f"{where}: more than {MAX_DIMS} dimensions")
        level = list(chain.from_iterable(level))
        if not level:
            return shape, level


def _bytes(item: Any, where: str, index: int) -> bytes:
    if type(item) is str:
        return item.encode()
    if _is_b64(item) and type(item[_B64]) is str:
        try:
            return base64.b64decode(item[_B64], validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgumentError(
                f"{where}: element {index} is not valid base64: {describe(item[_B64])}"
            ) from None
    raise InvalidArgumentError(
        f'{where}: DT_STRING values must be strings or {{"b64": "<base64>"}} objects; '
        f"received {describe(item)} at element {index}"
    )


# ----------------------------------------------------------------------------- responses


def encode_predict(format: str, outputs: dict[str, np.ndarray]) -> bytes:
    """The response body for ``outputs`` (in the model's output order)."""
    values = {name: _json_ready(name, array) for name, array in outputs.items()}
    if format == COLUMNAR:
        body: dict[str, Any] = {"outputs": _single_or_all(values)}
    else:
        body = {"predictions": _rows(values, outputs)}
    if any(_non_finite(array) for array in outputs.values()):
        return _dumps_non_finite(body)
    return orjson.dumps(body, option=_NUMPY)


def _single_or_all(values: dict[str, Any]) -> Any:
    return next(iter(values.values())) if len(values) == 1 else values


def _rows(values: dict[str, Any], outputs: dict[str, np.ndarray]) -> Any:
    batch = -1
    for name, array in outputs.items():
        rows = array.shape[0] if array.ndim else -1
        if rows < 0 or batch not in (-1, rows):
            raise InvalidArgumentError(
                f"output '{name}' has inconsistent batch size: {rows} expecting: {batch}; the "
                f"row ('instances') format needs every output to have one row per example: "
                f"use the columnar ('inputs') format"
            )
        batch = rows
    if len(values) == 1:
        return next(iter(values.values()))
    return [{name: value[i] for name, value in values.items()} for i in range(batch)]


def _json_ready(name: str, array: np.ndarray) -> Any:
    """What orjson can write: C-contiguous native numbers, or nested lists for the rest."""
    if array.dtype in _ORJSON_DTYPES:
        return array if array.flags.c_contiguous else np.ascontiguousarray(array)
    if array.dtype.kind in "SUO":
        binary = name.endswith("_bytes")
        texts = np.frompyfunc(lambda v: _text(v, binary), 1, 1)(array)
        return np.asarray(texts, dtype=object).tolist()
    return np.ascontiguousarray(array, dtype=np.float32)  # BF16 (ml_dtypes) and the like


def _text(value: Any, binary: bool) -> Any:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if not binary:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            pass
    return {_B64: base64.b64encode(raw).decode()}


def _non_finite(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" and array.size > 0 and not np.isfinite(array).all()


def _dumps_non_finite(body: Any) -> bytes:
    """The slow path for outputs holding NaN or +-inf: orjson would write null."""

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return value.astype(np.float64).tolist() if value.dtype.kind == "f" else value.tolist()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return json.dumps(plain(body), allow_nan=True, separators=(",", ":")).encode()


def encode_error(message: str) -> bytes:
    return orjson.dumps({"error": message})
