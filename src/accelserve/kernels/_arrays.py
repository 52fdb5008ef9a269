"""Where an array lives (library and device) and conversions between array libraries.

Inputs are recognised by their type's module name, so nothing here imports torch or jax until
an array of theirs actually arrives. Conversions go through DLPack or shared host memory where
they can, so a torch CPU tensor becomes a NumPy array without a copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

from accelserve.errors import InvalidArgumentError

# DLPack device type codes (dlpack.h DLDeviceType) -> our device kinds.
_DLPACK_KINDS = {1: "cpu", 2: "cuda", 3: "cpu", 13: "cuda"}  # kDLCPU, kDLCUDA, host, managed
_JAX_PLATFORMS = {"cpu": "cpu", "tpu": "tpu", "gpu": "cuda", "cuda": "cuda"}


@dataclass(frozen=True, slots=True)
class Placement:
    family: str  # "numpy" | "torch" | "jax"
    kind: str  # device kind: "cpu" | "cuda" | "tpu" | whatever the library calls it
    index: int = 0
    device: Any = None  # the library's own device object, to put results back there

    def __str__(self) -> str:
        return f"{self.family} array on {self.kind}:{self.index}"


def _root_module(x: object) -> str:
    return type(x).__module__.split(".", 1)[0]


def is_array(x: object) -> bool:
    return (
        isinstance(x, np.ndarray)
        or _root_module(x) in ("torch", "jax", "jaxlib")
        or (hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"))
    )


def adopt(x: object, name: str) -> Any:
    """Return ``x`` as a NumPy, torch or jax array (other DLPack producers are imported)."""
    if isinstance(x, np.ndarray) or _root_module(x) in ("torch", "jax", "jaxlib"):
        return x
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        dev_type = int(x.__dlpack_device__()[0])
        if _DLPACK_KINDS.get(dev_type) == "cpu":
            return np.from_dlpack(x)
        import torch  # a CUDA producer (CuPy, ...): torch is what the GPU kernels speak

        return torch.from_dlpack(x)
    raise InvalidArgumentError(
        f"{name}: expected an array (numpy.ndarray, torch.Tensor, jax.Array or an object with "
        f"__dlpack__); received {type(x).__name__}"
    )


_NUMPY = Placement("numpy", "cpu")


def placement(x: Any) -> Placement:
    if isinstance(x, np.ndarray):
        return _NUMPY
    root = _root_module(x)
    if root == "torch":
        dev = x.device
        return Placement("torch", str(dev.type), int(dev.index or 0), dev)
    # jax: a concrete array knows its device; a tracer (inside jax.jit) only the default backend.
    devices = x.devices() if hasattr(x, "devices") and callable(x.devices) else None
    if devices:
        dev = next(iter(devices))
        return Placement("jax", _JAX_PLATFORMS.get(dev.platform, dev.platform), dev.id, dev)
    import jax

    backend = jax.default_backend()
    return Placement("jax", _JAX_PLATFORMS.get(backend, backend), 0, None)


_DTYPE_NAMES: dict[Any, str] = {}


def dtype_name(x: Any) -> str:
    """'float32', 'bfloat16', 'int64', 'bool'... whatever library the array comes from."""
    dt = x.dtype
    name = _DTYPE_NAMES.get(dt)
    if name is None:
        raw = dt.name if isinstance(dt, np.dtype) else str(getattr(dt, "name", dt))
        name = _DTYPE_NAMES[dt] = raw.removeprefix("torch.")
    return name


def shape_of(x: Any) -> tuple[int, ...]:
    if isinstance(x, np.ndarray):
        return x.shape
    return tuple(int(s) for s in x.shape)


# ---- conversions --------------------------------------------------------------------------


def to_numpy(x: Any) -> np.ndarray:
    """A host NumPy view or copy of any supported array (bf16 as ml_dtypes.bfloat16)."""
    if isinstance(x, np.ndarray):
        return x
    if _root_module(x) == "torch":
        import torch

        t = x.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()
    return np.asarray(x)


def to_torch(x: Any) -> Any:
    import torch

    if _root_module(x) == "torch":
        return x.detach()
    if isinstance(x, np.ndarray):
        if not x.flags.writeable:  # torch would warn that it cannot protect a read-only buffer
            x = x.copy()
        if x.dtype == ml_dtypes.bfloat16:
            return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(x)
    return torch.from_dlpack(x)  # jax arrays, on CPU or GPU, without a copy


def to_jax(x: Any) -> Any:
    import jax
    import jax.numpy as jnp

    root = _root_module(x)
    if root in ("jax", "jaxlib"):
        return x
    if isinstance(x, np.ndarray):
        return jax.device_put(x, jax.devices("cpu")[0])
    return jnp.from_dlpack(x)


def convert(x: Any, family: str) -> Any:
    if family == "numpy":
        return to_numpy(x)
    if family == "torch":
        return to_torch(x)
    return to_jax(x)


def restore(y: Any, where: Placement) -> Any:
    """Give a provider's result back in the caller's library, on the caller's device."""
    if where.family == "numpy":
        return to_numpy(y)
    if where.family == "torch":
        t = to_torch(y)
        return t if t.device == where.device else t.to(where.device)
    out = to_jax(y)
    if where.device is not None and out.devices() != {where.device}:
        import jax

        out = jax.device_put(out, where.device)
    return out
