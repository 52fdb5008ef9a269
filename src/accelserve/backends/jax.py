"""JAX backend, the TPU path: ``model.jax`` holds ``jax.export.Exported.serialize()`` bytes.

The program runs on the XLA platform of the instance's device: ``cpu`` -> jax's ``cpu``
devices, ``cuda:N`` -> the N-th GPU, ``tpu:N`` -> the N-th TPU. A program exported for other
platforms (``Exported.platforms``) is refused at load: export with
``jax.export.export(fn, platforms=[...])`` listing every platform it should serve on.

Inputs are the program's flat arguments in order, named by the config (or ``in0``, ``in1``...);
outputs are its flat results, named by the config (or ``out0``...). A symbolic first dimension
on every input and output (``jax.export.symbolic_shape("b, ...")``) makes the model batch. Each
new batch size compiles once; later batches of that size reuse the compiled program.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax import export as jax_export

from accelserve.backends.base import Backend
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError, ServerFaultError
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.types import TensorSpec, v2_datatype

# accelserve device kind -> the Exported.platforms names that can run on it
_PLATFORMS = {"cpu": ("cpu",), "cuda": ("cuda", "rocm"), "tpu": ("tpu",)}
# accelserve device kind -> the name jax.devices() takes
_JAX_BACKEND = {"cpu": "cpu", "cuda": "gpu", "tpu": "tpu"}


class JaxBackend(Backend):
    default_filename = "model.jax"

    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
        where = f"model '{config.name}' version {version_dir.name}"
        self._where = where
        path = self.model_file(version_dir, config)
        filename = path.name
        try:
            exported = jax_export.deserialize(bytearray(path.read_bytes()))
        except Exception as exc:
            raise ConfigError(
                f"{where}: '{filename}' is not a jax.export artifact (Exported.serialize() "
                f"bytes): {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        wanted = _PLATFORMS.get(device.kind, ())
        if not set(wanted) & set(exported.platforms):
            raise ConfigError(
                f"{where}: '{filename}' was exported for platforms {list(exported.platforms)}; "
                f"device {device} needs {' or '.join(repr(p) for p in wanted)}: export with "
                f"jax.export.export(fn, platforms=[..., {wanted[0]!r}])"
            )
        self._jax_device = _jax_device(device, where)
        self.device = device
        self._input_names = _names(config.input, len(exported.in_avals), "in", "input", where)
        self._output_names = _names(config.output, len(exported.out_avals), "out", "output", where)
        self._set_specs(config, exported)
        in_tree = exported.in_tree

        def run(*flat: jax.Array) -> list[jax.Array]:
            args, kwargs = jax.tree_util.tree_unflatten(in_tree, flat)
            return jax.tree_util.tree_leaves(exported.call(*args, **kwargs))

        # jit follows its committed inputs, so the program runs where device_put placed them.
        self._run: Callable[..., list[jax.Array]] | None = jax.jit(run)

    def _set_specs(self, config: ModelConfig, exported: Any) -> None:
        avals = [
            *zip(self._input_names, exported.in_avals, strict=True),
            *zip(self._output_names, exported.out_avals, strict=True),
        ]
        for name, aval in avals:
            dtype = np.dtype(aval.dtype)
            if dtype.itemsize == 8 and not getattr(jax.config, "jax_enable_x64", False):
                raise ConfigError(
                    f"{self._where}: tensor '{name}' is {dtype}; run with JAX_ENABLE_X64=1 to "
                    "serve 64-bit tensors"
                )
        fixed = [n for n, a in avals if not a.shape or isinstance(a.shape[0], int)]
        batched = bool(avals) and not fixed
        if config.max_batch_size > 0 and not batched:
            raise ConfigError(
                f"{self._where}: max_batch_size is {config.max_batch_size} but tensor "
                f"'{fixed[0] if fixed else '?'}' has no symbolic first dimension; export with "
                "jax.export.symbolic_shape('b, ...') or set max_batch_size: 0"
            )
        # A config that declares a non-batching model is checked against the full shapes.
        strip = batched and not (config.max_batch_size == 0 and (config.input or config.output))
        self.max_batch_size = -1 if strip else 0
        specs = []
        for name, aval in avals:
            try:
                datatype = v2_datatype(np.dtype(aval.dtype))
            except KeyError:
                raise ConfigError(
                    f"{self._where}: tensor '{name}' has dtype {aval.dtype}, which the V2 "
                    "protocol cannot carry"
                ) from None
            dims = tuple(d if isinstance(d, int) else -1 for d in aval.shape)
            specs.append(TensorSpec(name, datatype, dims[1:] if strip else dims))
        count = len(exported.in_avals)
        self.inputs, self.outputs = specs[:count], specs[count:]

    def run_on_device(self, inputs: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """Run one batch and keep the results as jax arrays on the instance's device."""
        if self._run is None:
            raise ServerFaultError(f"{self._where}: the model is unloaded")
        try:
            arrays = [jax.device_put(inputs[n], self._jax_device) for n in self._input_names]
        except KeyError as exc:
            raise ModelExecutionError(f"{self._where}: input {exc} is missing") from None
        try:
            results = self._run(*arrays)
        except Exception as exc:
            text = f"{self._where}: JAX failed: {type(exc).__name__}: {_first_line(exc)}"
            # XLA's gathers clamp an index out of range instead of failing, so the only
            # failures told apart are the server's: out of device memory.
            if isinstance(exc, MemoryError) or "RESOURCE_EXHAUSTED" in text:
                raise ServerFaultError(text) from None
            raise ModelExecutionError(text) from None
        return dict(zip(self._output_names, results, strict=True))

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.asarray(array) for name, array in self.run_on_device(inputs).items()}

    def unload(self) -> None:
        self._run = None


def _jax_device(device: Device, where: str) -> Any:
    backend = _JAX_BACKEND.get(device.kind)
    if backend is None:
        raise ConfigError(
            f"{where}: the JAX backend runs on cpu, cuda:N or tpu:N; received {device}"
        )
    try:
        devices = jax.devices(backend)
    except RuntimeError:
        present = sorted({d.platform for d in jax.devices()})
        raise ConfigError(
            f"{where}: device {device} is not available to JAX here; JAX has {', '.join(present)}"
        ) from None
    if device.index >= len(devices):
        raise ConfigError(
            f"{where}: device {device} is not available to JAX here; it sees {len(devices)} "
            f"{backend} device(s)"
        )
    return devices[device.index]


def _names(tensors: Any, count: int, prefix: str, kind: str, where: str) -> list[str]:
    declared = [t.name for t in tensors]
    if not declared:
        return [f"{prefix}{i}" for i in range(count)]
    if len(declared) != count:
        raise ConfigError(
            f"{where}: the config declares {len(declared)} {kind}s ({', '.join(declared)}); "
            f"the exported program has {count}"
        )
    return declared


def _first_line(exc: BaseException) -> str:
    # XLA messages can carry file paths and C++ frames: keep the first line, hide paths.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return re.sub(r"(/[\w.\-]+)+", "<path>", text)[:500]
