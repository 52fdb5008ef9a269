"""The native model format: what ``model.json`` and ``model.safetensors`` hold, parsed and
checked (``parse_model``) and written (``write_native_model``). The backend that runs it is
``accelserve.backends.native``.

A version directory holds ``model.safetensors`` (the weights) and ``model.json``::

    {"format": "accelserve_native", "format_version": 1,
     "input":  {"name": "x", "datatype": "FP32", "dims": [384]},
     "output": {"name": "y"},
     "layers": [{"type": "linear", "weight": "layers.0.weight", "bias": "layers.0.bias",
                 "activation": "relu"},
                {"type": "linear", "weight": "layers.1.weight", "bias": null,
                 "activation": null},
                {"type": "l2_normalize"}]}

``linear`` computes ``activation(x @ W + b)`` with ``W`` [K, N] and ``b`` [N] (``bias`` and
``activation`` may be null; activations: relu, gelu, silu); ``l2_normalize`` divides each row
by its L2 norm (optional ``"eps"``, default 1e-12). Input dims exclude the batch dimension (the
model always batches); the last one is the first layer's K. The output keeps the input's
datatype and leading dims, its last dim is the last layer's N. Weights share the input's
datatype (FP32, FP16, BF16; FP64 on CPU). Without ``model.json`` the layers come from the config
parameter ``layers`` (the same JSON list) and the input/output from the config's single
``input``/``output`` entries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.errors import ConfigError
from accelserve.types import TensorSpec, numpy_dtype, v2_datatype

FORMAT = "accelserve_native"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
ACTIVATIONS = (None, "relu", "gelu", "silu")
DATATYPES = ("FP32", "FP16", "BF16", "FP64")
_LAYER_KEYS = {"linear": {"type", "weight", "bias", "activation"}, "l2_normalize": {"type", "eps"}}


@dataclass(frozen=True, slots=True)
class Layer:
    type: str  # "linear" | "l2_normalize"
    weight: str | None = None
    bias: str | None = None
    activation: str | None = None
    eps: float = 1e-12


@dataclass(frozen=True, slots=True)
class NativeModel:
    """A parsed and checked model description (dims exclude the batch dimension)."""

    input: TensorSpec
    output: TensorSpec
    layers: tuple[Layer, ...]


def parse_model(doc: Any, weights: Mapping[str, np.ndarray], source: str) -> NativeModel:
    """Check a model description against its weights; errors name ``source`` and the field."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object; received {type(doc).__name__}")
    if doc.get("format", FORMAT) != FORMAT or doc.get("format_version", 1) != FORMAT_VERSION:
        raise ConfigError(
            f"{source}: format: expected {FORMAT!r} version {FORMAT_VERSION}; received "
            f"{doc.get('format')!r} version {doc.get('format_version')!r}"
        )
    inp = _tensor(doc.get("input"), f"{source} input")
    dt, dims = inp.datatype, inp.dims
    if dt not in DATATYPES:
        raise ConfigError(f"{source} input.datatype: expected one of {DATATYPES}; received {dt!r}")
    if not dims or dims[-1] < 1:
        raise ConfigError(
            f"{source} input.dims: expected at least one dim, the last one fixed (the first "
            f"layer's K); received {list(dims)}"
        )
    raw = doc.get("layers")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source} layers: expected a non-empty list; received {raw!r}")
    width = dims[-1]
    layers = []
    for i, entry in enumerate(raw):
        layer = _layer(entry, f"{source} layers[{i}]", weights, dt, width)
        if layer.weight is not None:
            width = int(weights[layer.weight].shape[1])
        layers.append(layer)
    out_dims = (*dims[:-1], width)
    out = _tensor(doc.get("output"), f"{source} output", datatype=dt, dims=out_dims)
    if out.datatype != dt or out.dims != out_dims:
        raise ConfigError(
            f"{source} output: the layers produce {dt} {list(out_dims)}; the description says "
            f"{out.datatype} {list(out.dims)}"
        )
    if out.name == inp.name:
        raise ConfigError(f"{source}: input and output are both named {inp.name!r}")
    return NativeModel(inp, out, tuple(layers))


def _tensor(
    entry: Any, where: str, datatype: str = "", dims: tuple[int, ...] | None = None
) -> TensorSpec:
    if isinstance(entry, str) and datatype:  # an output given by its name only
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise ConfigError(f"{where}: expected an object with a 'name'; received {entry!r}")
    raw_dims = entry.get("dims", dims)
    if not isinstance(raw_dims, list | tuple) or not all(
        isinstance(d, int) and (d >= 1 or d == -1) for d in raw_dims
    ):
        raise ConfigError(
            f"{where}.dims: expected a list of sizes >= 1 or -1; received {raw_dims!r}"
        )
    return TensorSpec(entry["name"], str(entry.get("datatype", datatype)), tuple(raw_dims))


def _layer(
    entry: Any, where: str, weights: Mapping[str, np.ndarray], datatype: str, width: int
) -> Layer:
    kind = entry.get("type") if isinstance(entry, dict) else None
    if kind not in _LAYER_KEYS:
        raise ConfigError(
            f"{where}.type: expected one of {', '.join(_LAYER_KEYS)}; received {kind!r}"
        )
    unknown = set(entry) - _LAYER_KEYS[kind]
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))} for a {kind} layer; "
            f"expected {', '.join(sorted(_LAYER_KEYS[kind]))}"
        )
    if kind == "l2_normalize":
        eps = entry.get("eps", 1e-12)
        if not isinstance(eps, int | float) or not math.isfinite(eps) or eps <= 0:
            raise ConfigError(f"{where}.eps: expected a number > 0; received {eps!r}")
        return Layer(kind, eps=float(eps))
    activation = entry.get("activation")
    if activation not in ACTIVATIONS:
        raise ConfigError(
            f"{where}.activation: expected null, relu, gelu or silu; received {activation!r}"
        )
    weight = _weight(entry.get("weight"), f"{where}.weight", weights, datatype, 2)
    k, n = weights[weight].shape
    if k != width:
        raise ConfigError(
            f"{where}.weight: '{weight}' has shape [{k}, {n}]; expected [{width}, N] "
            "(K must match the previous layer's width)"
        )
    bias = entry.get("bias")
    if bias is not None:
        bias = _weight(bias, f"{where}.bias", weights, datatype, 1)
        if weights[bias].shape != (n,):
            raise ConfigError(
                f"{where}.bias: '{bias}' has shape {list(weights[bias].shape)}; expected [{n}]"
            )
    return Layer(kind, weight, bias, activation)


def _weight(
    name: Any, where: str, weights: Mapping[str, np.ndarray], datatype: str, ndim: int
) -> str:
    if not isinstance(name, str) or name not in weights:
        known = ", ".join(sorted(weights)) or "none"
        raise ConfigError(
            f"{where}: expected a tensor name in {WEIGHTS_FILE} ({known}); received {name!r}"
        )
    array = weights[name]
    if array.ndim != ndim:
        raise ConfigError(f"{where}: '{name}' must be {ndim}-d; it has shape {list(array.shape)}")
    if array.dtype != numpy_dtype(datatype):
        raise ConfigError(
            f"{where}: '{name}' is {v2_datatype(array.dtype)}; the input datatype is {datatype} "
            "and every weight must match it"
        )
    return name


def write_native_model(
    directory: str | Path,
    layers: Sequence[Mapping[str, Any]],
    weights: Mapping[str, np.ndarray],
    input_spec: TensorSpec | Mapping[str, Any],
    output_spec: TensorSpec | Mapping[str, Any] | str,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory`` (a version directory,
    created if needed) after checking them as ``load`` would; returns ``directory``."""
    from safetensors.numpy import save_file

    def as_dict(spec: Any) -> Any:
        if isinstance(spec, TensorSpec):
            return {"name": spec.name, "datatype": spec.datatype, "dims": list(spec.dims)}
        return dict(spec) if isinstance(spec, Mapping) else spec

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "input": as_dict(input_spec),
        "output": as_dict(output_spec),
        "layers": [dict(layer) for layer in layers],
    }
    arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
    model = parse_model(doc, arrays, "write_native_model")
    doc["output"] = as_dict(model.output)  # complete datatype and dims
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    save_file(arrays, str(target / WEIGHTS_FILE), metadata={"format": FORMAT})
    (target / SPEC_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return target
