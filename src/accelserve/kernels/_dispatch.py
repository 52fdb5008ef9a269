"""Route one op call to a provider: find where the inputs live, pick the provider, convert.

Rules (first match wins):
1. ``provider=`` argument, else the ``ACCELSERVE_KERNEL_PROVIDER`` environment variable.
2. torch CPU tensors go to ``triton`` when ``TRITON_INTERPRET=1`` (Triton's CPU interpreter).
3. Otherwise the first installed provider registered for (op, device kind): NumPy and CPU
   arrays of any library -> ``cpu``, CUDA -> ``triton``, TPU -> ``pallas``.
A forced provider must be registered for the device kind; the error lists the ones that are.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

from accelserve.errors import InvalidArgumentError, UnavailableError
from accelserve.kernels import _registry
from accelserve.kernels._arrays import (
    Placement,
    adopt,
    convert,
    dtype_name,
    placement,
    restore,
)

ENV_PROVIDER = "ACCELSERVE_KERNEL_PROVIDER"


def gather(op: str, arrays: Mapping[str, Any]) -> tuple[dict[str, Any], Placement]:
    """Adopt every array argument and check that they all live in one place."""
    adopted = {name: adopt(x, f"{op}: {name}") for name, x in arrays.items()}
    where: Placement | None = None
    first = ""
    for name, x in adopted.items():
        here = placement(x)
        if where is None:
            where, first = here, name
        elif (here.family, here.kind, here.index) != (where.family, where.kind, where.index):
            raise InvalidArgumentError(
                f"{op}: all arrays must be of one library on one device; "
                f"{first} is a {where}, {name} is a {here}"
            )
    assert where is not None
    return adopted, where


def resolve(op: str, where: Placement, provider: str | None = None) -> str:
    """The provider that will run ``op`` for inputs living at ``where``."""
    forced = provider or os.environ.get(ENV_PROVIDER) or None
    if forced is None:
        if where.family == "torch" and where.kind == "cpu" and _interpreting_triton():
            return "triton"
        return _default(op, where.kind)
    row = _registry.on_device(op, where.kind)
    if forced not in row:
        source = "provider" if provider else ENV_PROVIDER
        raise InvalidArgumentError(
            f"{op}: {source}={forced!r} cannot run on {where.kind} arrays; "
            f"providers for {where.kind}: {', '.join(row)}"
        )
    return forced


@functools.cache
def _default(op: str, kind: str) -> str:
    """The first installed provider that runs (op, kind) natively; emulated ones (interpreted
    Triton, interpret-mode Pallas on CPU) are for testing and run only when asked for."""
    row = _registry.on_device(op, kind)
    for name in row:
        if kind in _registry.BY_NAME[name].devices and _registry.installed(name):
            return name
    raise UnavailableError(f"{op}: no installed provider for {kind}; registered: {', '.join(row)}")


def _interpreting_triton() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def run(
    op: str,
    arrays: Mapping[str, Any],
    where: Placement,
    kwargs: Mapping[str, Any],
    provider: str | None = None,
) -> Any:
    """Run ``op`` on the chosen provider and return the result where the inputs were."""
    name = resolve(op, where, provider)
    record = _registry.BY_NAME[name]
    supported = record.dtypes
    for arg, x in arrays.items():
        if x is None or arg == "mask":
            continue
        dt = dtype_name(x)
        if dt not in supported:
            raise InvalidArgumentError(
                f"{op}: {arg} has dtype {dt}; provider {name!r} supports "
                f"{', '.join(sorted(supported))}"
            )
    fn = getattr(_registry.load(op, name), op)
    native = [None if x is None else convert(x, record.library) for x in arrays.values()]
    extra = dict(kwargs)
    if record.takes_interpret:
        extra["interpret"] = where.kind in record.emulated
    result = fn(*native, **extra)
    return restore(result, where)
