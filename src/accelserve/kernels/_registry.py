"""Which providers implement which op on which device kind, and how to load them.

A provider is one module per op: ``accelserve.kernels.<provider>.<file>`` exposing a function named
after the op. Adding one is one file plus one entry in ``REGISTRY``. Modules are imported on first
use, so ``import accelserve.kernels`` never pulls in numba, torch, triton or jax.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from types import ModuleType

from accelserve.errors import InvalidArgumentError, UnavailableError

OPS = (
    "matmul",
    "add",
    "linear",
    "reduce_sum",
    "reduce_mean",
    "l2_normalize",
    "masked_mean_pool_l2",
)
# The file an op lives in under each provider package (the two reductions share one).
FILES = {op: op for op in OPS} | {"reduce_sum": "reduce", "reduce_mean": "reduce"}

# The array library each provider computes on; the dispatcher converts to and from it.
NATIVE = {"reference": "numpy", "cpu": "numpy", "triton": "torch", "pallas": "jax"}
# Packages a provider needs; a provider whose packages are missing is skipped by default.
NEEDS = {"reference": (), "cpu": ("numba",), "triton": ("torch", "triton"), "pallas": ("jax",)}
FLOAT16 = frozenset({"float16", "bfloat16", "float32"})
DTYPES = {
    "reference": FLOAT16 | {"float64"},
    "cpu": FLOAT16 | {"float64"},
    "triton": FLOAT16,
    "pallas": FLOAT16,
}

_CPU = ("cpu", "reference", "triton", "pallas")  # triton interpreted, pallas interpret=True
_CUDA = ("triton", "reference")  # reference runs on a host copy
_TPU = ("pallas", "reference")

# (op, device kind) -> providers that can run it there, the default first.
REGISTRY: dict[tuple[str, str], tuple[str, ...]] = {
    ("matmul", "cpu"): _CPU,
    ("matmul", "cuda"): _CUDA,
    ("matmul", "tpu"): _TPU,
    ("add", "cpu"): _CPU,
    ("add", "cuda"): _CUDA,
    ("add", "tpu"): _TPU,
    ("linear", "cpu"): _CPU,
    ("linear", "cuda"): _CUDA,
    ("linear", "tpu"): _TPU,
    ("reduce_sum", "cpu"): _CPU,
    ("reduce_sum", "cuda"): _CUDA,
    ("reduce_sum", "tpu"): _TPU,
    ("reduce_mean", "cpu"): _CPU,
    ("reduce_mean", "cuda"): _CUDA,
    ("reduce_mean", "tpu"): _TPU,
    ("l2_normalize", "cpu"): _CPU,
    ("l2_normalize", "cuda"): _CUDA,
    ("l2_normalize", "tpu"): _TPU,
    ("masked_mean_pool_l2", "cpu"): _CPU,
    ("masked_mean_pool_l2", "cuda"): _CUDA,
    ("masked_mean_pool_l2", "tpu"): _TPU,
}


def check_op(op: str) -> None:
    if op not in OPS:
        raise InvalidArgumentError(f"op: expected one of {', '.join(OPS)}; received {op!r}")


def providers(op: str) -> list[str]:
    """Every provider registered for ``op`` on any device kind, defaults first."""
    check_op(op)
    names: list[str] = []
    for (row_op, _kind), row in REGISTRY.items():
        if row_op == op:
            names += [p for p in row if p not in names]
    return names


@functools.cache
def installed(provider: str) -> bool:
    """Whether the packages ``provider`` needs can be imported here (without importing them)."""
    return all(importlib.util.find_spec(pkg) is not None for pkg in NEEDS[provider])


def on_device(op: str, kind: str) -> tuple[str, ...]:
    """Providers for ``op`` on device kind ``kind``; a clear error naming what exists if none."""
    check_op(op)
    row = REGISTRY.get((op, kind))
    if row is None:
        where = "; ".join(f"{k}: {', '.join(row)}" for (o, k), row in REGISTRY.items() if o == op)
        raise InvalidArgumentError(
            f"{op}: no provider runs on device kind {kind!r}; providers exist for {where}"
        )
    return row


_loaded: dict[tuple[str, str], ModuleType] = {}


def load(op: str, provider: str) -> ModuleType:
    """Import (once) the module implementing ``op`` for ``provider``."""
    module = _loaded.get((op, provider))
    if module is None:
        missing = [pkg for pkg in NEEDS[provider] if importlib.util.find_spec(pkg) is None]
        if missing:
            raise UnavailableError(
                f"{op}: provider {provider!r} needs {', '.join(missing)}, which is not installed"
            )
        module = importlib.import_module(f"accelserve.kernels.{provider}.{FILES[op]}")
        _loaded[(op, provider)] = module
    return module
