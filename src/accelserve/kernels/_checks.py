"""Argument checks shared by every provider: shapes, dtypes, axes. Messages name the argument,
what was expected and what was received."""

from __future__ import annotations

from typing import Any

from accelserve.errors import InvalidArgumentError
from accelserve.kernels._arrays import dtype_name, shape_of

FLOATS = ("float16", "bfloat16", "float32", "float64")
ALGORITHMS = ("naive", "unrolled", "blocked", "auto")
ACTIVATIONS = (None, "relu", "gelu", "silu")


def floating(op: str, name: str, x: Any) -> str:
    dt = dtype_name(x)
    if dt not in FLOATS:
        raise InvalidArgumentError(
            f"{op}: {name} must be a floating array ({', '.join(FLOATS)}); received {dt}"
        )
    if 0 in shape_of(x):
        raise InvalidArgumentError(f"{op}: {name} must not be empty; received shape {shape_of(x)}")
    return dt


def same_dtype(op: str, named: dict[str, Any]) -> str:
    dtypes = {name: floating(op, name, x) for name, x in named.items() if x is not None}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{n}={d}" for n, d in dtypes.items())
        raise InvalidArgumentError(f"{op}: arguments must share one dtype; received {listed}")
    return next(iter(dtypes.values()))


def ndim(op: str, name: str, x: Any, expected: int) -> tuple[int, ...]:
    shape = shape_of(x)
    if len(shape) != expected:
        raise InvalidArgumentError(
            f"{op}: {name} must have {expected} dimensions; received shape {shape}"
        )
    return shape


def axis(op: str, value: object, rank: int, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "None or an int" if allow_none else "an int"
        raise InvalidArgumentError(f"{op}: axis must be {expected}; received {value!r}")
    if not -rank <= value < rank:
        raise InvalidArgumentError(
            f"{op}: axis must be in [{-rank}, {rank - 1}] for a {rank}-d array; received {value}"
        )
    return value % rank


def choice(op: str, name: str, value: object, options: tuple[object, ...]) -> None:
    if value not in options:
        raise InvalidArgumentError(
            f"{op}: {name} must be one of {', '.join(map(repr, options))}; received {value!r}"
        )


def positive(op: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidArgumentError(f"{op}: {name} must be a number > 0; received {value!r}")
    return float(value)


def broadcast_shape(op: str, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy broadcasting rules, with an error naming both shapes."""
    rank = max(len(a), len(b))
    pa, pb = (1,) * (rank - len(a)) + a, (1,) * (rank - len(b)) + b
    out = []
    for i, (x, y) in enumerate(zip(pa, pb, strict=True)):
        if x != y and 1 not in (x, y):
            raise InvalidArgumentError(
                f"{op}: shapes {a} and {b} do not broadcast (dimension {i - rank}: {x} vs {y})"
            )
        out.append(max(x, y))
    return tuple(out)
