"""Native backend: dense models in accelserve's own small format (``native_format``: a
``model.json`` of layers over ``model.safetensors``), run with ``accelserve.kernels``.

On ``cpu`` the weights stay NumPy arrays (the kernels' CPU provider), linear weights in Fortran
order (``w.T`` row-major, the layout of the provider's small-batch kernel); a request whose input
matches the model calls the provider directly, each run of linear layers as one compiled call
(``LinearChain``, in float32, which also keeps a C-ordered copy of those weights for one-row
requests: ``memory_bytes`` counts the copies). On ``cuda:N`` the weights move once, at load, to
torch CUDA tensors (the Triton provider); on ``tpu:N`` to jax arrays (Pallas).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from accelserve import kernels
from accelserve.backends.base import Backend
from accelserve.backends.native_format import SPEC_FILE, WEIGHTS_FILE, NativeModel, parse_model
from accelserve.devices import Device
from accelserve.errors import AccelServeError, ConfigError, ModelExecutionError, ServerFaultError
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.types import TensorSpec, numpy_dtype


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
            raise ServerFaultError(f"{self._where}: the model is unloaded")
        name = self._model.input.name
        if name not in inputs:
            raise ModelExecutionError(f"{self._where}: input '{name}' is missing")
        try:
            y = self._run(inputs[name])
        except MemoryError:
            raise ServerFaultError(f"{self._where}: out of memory") from None
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
