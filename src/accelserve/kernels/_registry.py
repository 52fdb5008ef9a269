"""The kernel providers, one frozen record each, and the dispatch tables derived from them.

A provider is one package ``accelserve.kernels.<name>`` with one module per op exposing a
function named after the op. Adding one is that package plus one ``Provider`` record in
``PROVIDERS``. Modules are imported on first use, so ``import accelserve.kernels`` never pulls
in numba, torch, triton or jax.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
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
DEVICE_KINDS = ("cpu", "cuda", "tpu")
# The array libraries the dispatcher converts to and from (kernels._arrays.convert).
LIBRARIES = ("numpy", "torch", "jax")
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True, slots=True)
class Provider:
    """One kernel provider: where it runs, what it computes on, and what it needs installed."""

    name: str  # the package under accelserve.kernels
    library: str  # the array library its functions take and return
    needs: tuple[str, ...]  # packages it imports; missing ones make it unavailable
    dtypes: frozenset[str]  # input dtypes it computes in
    devices: tuple[str, ...]  # device kinds it runs on, and may be chosen by default there
    # Device kinds it runs on only when forced: an interpreter, for testing (slow).
    emulated: tuple[str, ...] = ()
    # Its functions take ``interpret: bool``, True on the ``emulated`` device kinds.
    takes_interpret: bool = False
    ops: tuple[str, ...] = OPS

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            _invalid(self.name, "name", "a Python identifier (the provider's package)")
        _choice(self.name, "library", (self.library,), LIBRARIES)
        _choice(self.name, "dtypes", tuple(sorted(self.dtypes)), FLOAT_DTYPES)
        _choice(self.name, "devices", self.devices, DEVICE_KINDS)
        _choice(self.name, "emulated", self.emulated, DEVICE_KINDS)
        _choice(self.name, "ops", self.ops, OPS)
        if not self.devices:
            _invalid(self.devices, f"provider {self.name!r} devices", "at least one device kind")
        if not self.dtypes:
            _invalid(self.dtypes, f"provider {self.name!r} dtypes", "at least one dtype")
        both = sorted(set(self.devices) & set(self.emulated))
        if both:
            _invalid(self.emulated, f"provider {self.name!r} emulated", f"none of devices {both}")


def _choice(provider: str, field: str, values: tuple[str, ...], valid: tuple[str, ...]) -> None:
    for value in values:
        if value not in valid:
            _invalid(value, f"provider {provider!r} {field}", f"one of {', '.join(valid)}")


def _invalid(received: object, field: str, expected: str) -> None:
    raise ValueError(f"{field}: expected {expected}; received {received!r}")


_FLOATS = frozenset({"float16", "bfloat16", "float32"})

# Per device kind, a provider's place in this table is its rank among those that run there
# natively (the first installed one is the default), ahead of the emulated ones.
PROVIDERS = (
    Provider("cpu", "numpy", ("numba",), _FLOATS | {"float64"}, devices=("cpu",)),
    Provider("triton", "torch", ("torch", "triton"), _FLOATS, devices=("cuda",), emulated=("cpu",)),
    Provider(
        "pallas",
        "jax",
        ("jax",),
        _FLOATS,
        devices=("tpu",),
        emulated=("cpu",),
        takes_interpret=True,
    ),
    # Last: on accelerators it runs on a host copy, the fallback when nothing else is installed.
    Provider("reference", "numpy", (), _FLOATS | {"float64"}, devices=DEVICE_KINDS),
)
BY_NAME = {p.name: p for p in PROVIDERS}


def _rows(records: tuple[Provider, ...]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(op, device kind) -> providers that run it there: the native ones in table order,
    then the emulated ones."""
    rows: dict[tuple[str, str], tuple[str, ...]] = {}
    for op in OPS:
        for kind in DEVICE_KINDS:
            native = [p.name for p in records if op in p.ops and kind in p.devices]
            emulated = [p.name for p in records if op in p.ops and kind in p.emulated]
            if native or emulated:
                rows[(op, kind)] = (*native, *emulated)
    return rows


# (op, device kind) -> providers that can run it there, the default first.
REGISTRY = _rows(PROVIDERS)


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


def missing(provider: str) -> list[str]:
    """The packages ``provider`` needs that cannot be imported here (none are imported)."""
    return [pkg for pkg in BY_NAME[provider].needs if importlib.util.find_spec(pkg) is None]


@functools.cache
def installed(provider: str) -> bool:
    """Whether every package ``provider`` needs can be imported here."""
    return not missing(provider)


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
        absent = missing(provider)
        if absent:
            raise UnavailableError(
                f"{op}: provider {provider!r} needs {', '.join(absent)}, which is not installed"
            )
        module = importlib.import_module(f"accelserve.kernels.{provider}.{FILES[op]}")
        _loaded[(op, provider)] = module
    return module
