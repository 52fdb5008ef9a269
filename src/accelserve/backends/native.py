"""Native backend: dense models in a small documented format, run with ``accelserve.kernels``.

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

On ``cpu`` the weights stay NumPy arrays (the kernels' CPU provider), linear weights in Fortran
order (``w.T`` row-major, the layout of the provider's small-batch kernel); a request whose input
matches the model calls the provider directly, each run of linear layers as one compiled call
(``LinearChain``, in float32, which also keeps a C-ordered copy of those weights for one-row
requests: ``memory_bytes`` counts the copies). On ``cuda:N`` the weights move once, at load, to
torch CUDA tensors (the Triton provider); on ``tpu:N`` to jax arrays (Pallas).
``write_native_model`` writes the format.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelserve import kernels
from accelserve.backends.base import Backend
from accelserve.devices import Device
from accelserve.errors import AccelServeError, ConfigError, ModelExecutionError
from accelserve.protocol.model_config_pb2 import ModelConfig
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


class NativeBackend(Backend):
    default_filename = WEIGHTS_FILE

    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
        where = f"model '{config.name}' version {version_dir.name}"
        self._where = where
        path = self.model_file(version_dir, config)
        filename = path.name
        from safetensors.numpy import load_file

        try:
            weights = load_file(str(path))
        except Exception as exc:
            raise ConfigError(
                f"{where}: '{filename}' is not a safetensors file ({type(exc).__name__})"
            ) from None
        doc, source = _description(version_dir, config, where)
        self._model = model = parse_model(doc, weights, source)
        self._k = model.input.dims[-1:]
        self._to_device, self._to_host = _movers(device, where)
        used = {n for layer in model.layers for n in (layer.weight, layer.bias) if n}
        self._weights = {n: self._to_device(weights[n]) for n in used}
        if device.kind == "cpu":
            # Fortran order (w.T row-major) is the CPU provider's layout for batches up to
            # 128 rows: they then skip BLAS's per-call packing of w and its thread pool.
            self._weights = {n: np.asfortranarray(w) for n, w in self._weights.items()}
        self._dtype = numpy_dtype(model.input.datatype)
        self._direct = _cpu_layers(model, self._weights) if device.kind == "cpu" else None
        self._bytes = sum(int(weights[n].nbytes) for n in used) + sum(
            getattr(step, "extra_bytes", 0) for step in self._direct or ()
        )
        self._loaded = True
        self.device = device
        strip = not (config.max_batch_size == 0 and (config.input or config.output))
        self.max_batch_size = -1 if strip else 0
        self.inputs = [_with_batch(model.input, strip)]
        self.outputs = [_with_batch(model.output, strip)]
        # Run one row now: compiles the kernels (numba, Triton) before the first request and
        # proves the layers run on this device.
        sample = np.zeros(
            [1] + [max(d, 1) for d in model.input.dims], numpy_dtype(model.input.datatype)
        )
        try:
            self._run(sample)
        except Exception as exc:
            raise ConfigError(
                f"{where}: the layers cannot run on {device}: {_describe(exc)}"
            ) from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        direct = self._direct
        if (
            direct is not None
            and isinstance(x, np.ndarray)
            and x.dtype == self._dtype
            and x.shape[-1:] == self._k
        ):
            # The input is what load checked the layers against: call the CPU provider
            # directly (anything else takes the dispatcher, whose errors name the mismatch).
            y = np.ascontiguousarray(x)
            for step in direct:
                y = step(y)
            return y
        y = self._to_device(x)
        for layer in self._model.layers:
            if layer.type == "linear":
                assert layer.weight is not None
                bias = None if layer.bias is None else self._weights[layer.bias]
                y = kernels.linear(y, self._weights[layer.weight], bias, layer.activation)
            else:
                y = kernels.l2_normalize(y, eps=layer.eps)
        return self._to_host(y)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self._loaded:
            raise ModelExecutionError(f"{self._where}: the model is unloaded")
        name = self._model.input.name
        if name not in inputs:
            raise ModelExecutionError(f"{self._where}: input '{name}' is missing")
        try:
            y = self._run(inputs[name])
        except Exception as exc:
            raise ModelExecutionError(f"{self._where}: {_describe(exc)}") from None
        return {self._model.output.name: y}

    def unload(self) -> None:
        self._weights, self._direct, self._loaded = {}, None, False

    def memory_bytes(self) -> int | None:
        return self._bytes if self._loaded else 0


def _description(version_dir: Path, config: ModelConfig, where: str) -> tuple[Any, str]:
    """The model description: model.json, else the config's ``layers`` parameter + tensors."""
    spec_path = version_dir / SPEC_FILE
    if spec_path.is_file():
        try:
            return json.loads(spec_path.read_text()), f"{where} {SPEC_FILE}"
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where} {SPEC_FILE}: invalid JSON: {exc}") from None
    if "layers" not in config.parameters:
        raise ConfigError(
            f"{where}: expected file '{SPEC_FILE}' is missing (or a 'layers' config parameter "
            "with the same layer list)"
        )
    source = f"{where} parameter 'layers'"
    try:
        layers = json.loads(config.parameters["layers"].string_value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: invalid JSON: {exc}") from None
    if len(config.input) != 1 or len(config.output) != 1:
        raise ConfigError(
            f"{where}: without {SPEC_FILE} the config must declare exactly one input and one "
            f"output; it declares {len(config.input)} and {len(config.output)}"
        )
    from accelserve.config import input_specs, output_specs

    inp, out = input_specs(config)[0], output_specs(config)[0]
    if config.max_batch_size == 0:  # the config's dims include the batch dim
        inp = TensorSpec(inp.name, inp.datatype, inp.dims[1:])
        out = TensorSpec(out.name, out.datatype, out.dims[1:])
    as_entry = {"name": inp.name, "datatype": inp.datatype, "dims": list(inp.dims)}
    out_entry = {"name": out.name, "datatype": out.datatype, "dims": list(out.dims)}
    return {"input": as_entry, "output": out_entry, "layers": layers}, source


Step = Callable[[np.ndarray], np.ndarray]


def _cpu_layers(model: NativeModel, weights: Mapping[str, Any]) -> list[Step] | None:
    """On cpu, the layers bound to the ``cpu`` provider's functions and their weights, when the
    dispatcher would pick that provider: a request then skips the per-call argument checks and
    conversions that load already did (they cost more than the layer at batch 1). Each run of
    consecutive linear layers is one compiled call (``LinearChain``) except in FP64 models. The
    chain computes in float32, as the kernels do for 16-bit data, from float32 copies of the
    weights made once here (``memory_bytes`` counts them) rather than on every call; an FP16
    or BF16 model's output is rounded to its datatype once, at the end."""
    from accelserve import kernels

    sample = next(iter(weights.values()), np.zeros(1, np.float32))
    ops = {layer.type for layer in model.layers}
    if any(kernels.resolve_provider(op, sample) != "cpu" for op in ops):
        return None  # numba missing, or ACCELSERVE_KERNEL_PROVIDER forces another provider
    from accelserve.kernels.cpu._numba import quiet
    from accelserve.kernels.cpu.l2_normalize import l2_normalize
    from accelserve.kernels.cpu.linear import LinearChain, linear

    chain = model.input.datatype != "FP64"
    steps: list[Step] = []
    run: list[tuple[np.ndarray, np.ndarray | None, str | None]] = []
    for layer in (*model.layers, None):
        if layer is not None and layer.type == "linear":
            assert layer.weight is not None
            bias = None if layer.bias is None else weights[layer.bias]
            run.append((weights[layer.weight], bias, layer.activation))
            continue
        if run and chain:
            steps.append(LinearChain(run))
        elif run:
            steps += [functools.partial(linear, w=w, b=b, activation=a) for w, b, a in run]
        run = []
        if layer is not None:
            steps.append(functools.partial(l2_normalize, eps=layer.eps))
    if model.input.datatype in ("FP16", "BF16"):
        # quiet: an FP16 overflow becomes inf, as a layer's own rounding would, without a warning
        steps.append(quiet(functools.partial(np.asarray, dtype=numpy_dtype(model.input.datatype))))
    return steps


def _describe(exc: Exception) -> str:
    if isinstance(exc, AccelServeError):  # the kernels' own messages are client-safe
        return str(exc)
    # Framework messages can carry file paths and C++ frames: keep the first line, hide paths.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: " + re.sub(r"(/[\w.\-]+)+", "<path>", text)[:500]


def _with_batch(spec: TensorSpec, strip: bool) -> TensorSpec:
    return spec if strip else TensorSpec(spec.name, spec.datatype, (-1, *spec.dims))


Mover = Callable[[Any], Any]


def _movers(device: Device, where: str) -> tuple[Mover, Mover]:
    """Functions that move an array to the instance's device (in the library its kernel
    provider takes) and bring a result back as NumPy."""
    if device.kind == "cpu":
        return np.ascontiguousarray, np.asarray
    if device.kind == "cuda":
        return _torch_movers(device, where)
    if device.kind == "tpu":
        return _jax_movers(device, where)
    raise ConfigError(
        f"{where}: the native backend runs on cpu, cuda:N or tpu:N; received {device}"
    )


def _torch_movers(device: Device, where: str) -> tuple[Mover, Mover]:
    try:
        import ml_dtypes
        import torch
    except ImportError:
        raise ConfigError(f"{where}: running on {device} needs torch (with CUDA)") from None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.index >= count:
        raise ConfigError(
            f"{where}: device {device} is not available to PyTorch here; it sees {count} CUDA "
            "device(s)"
        )
    target = torch.device("cuda", device.index)
    bf16 = np.dtype(ml_dtypes.bfloat16)

    def to_device(x: np.ndarray) -> Any:
        x = np.ascontiguousarray(x)
        if x.dtype == bf16:
            return torch.from_numpy(x.view(np.int16)).to(target).view(torch.bfloat16)
        return torch.from_numpy(x if x.flags.writeable else x.copy()).to(target)

    def to_host(y: Any) -> np.ndarray:
        y = y.cpu()
        if y.dtype == torch.bfloat16:
            return np.asarray(y.view(torch.int16).numpy().view(bf16))
        return np.asarray(y.numpy())

    return to_device, to_host


def _jax_movers(device: Device, where: str) -> tuple[Mover, Mover]:
    try:
        import jax

        target = jax.devices("tpu")[device.index]
    except (ImportError, RuntimeError, IndexError):
        raise ConfigError(f"{where}: device {device} is not available to JAX here") from None
    return (lambda x: jax.device_put(x, target)), np.asarray
