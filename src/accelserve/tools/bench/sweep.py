"""Pure helpers: load-level sweeps and latency percentiles (no I/O, no asyncio)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_LEVELS = 256  # a sweep longer than this is almost surely a typo (1:10000:1)


def _number(text: str, integer: bool, what: str) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{what}: expected {kind}, got {text!r}") from None
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{what}: expected a positive value, got {text!r}")
    return value


def parse_sweep(text: str, *, integer: bool = True, what: str = "--concurrency") -> list[float]:
    """Parse a sweep: ``16``, ``1,16,64``, ``1:64:x2`` (geometric), ``8:64:8`` (linear).

    Items are comma-separated; a range is ``start:end[:step]`` where step is ``xF`` (multiply by
    F > 1) or ``S`` (add S > 0; default 1). Ranges include ``end`` when the steps land on it.
    Returns the levels in the order given, without duplicates.
    """
    if not text or not text.strip():
        raise ValueError(f"{what}: empty sweep; expected e.g. 16, 1,16,64 or 1:64:x2")
    levels: list[float] = []
    for item in text.split(","):
        item = item.strip()
        parts = item.split(":")
        if len(parts) == 1:
            levels.append(_number(parts[0], integer, what))
            continue
        if len(parts) not in (2, 3):
            raise ValueError(f"{what}: range {item!r} must be start:end or start:end:step")
        start = _number(parts[0], integer, what)
        end = _number(parts[1], integer, what)
        if end < start:
            raise ValueError(f"{what}: range {item!r} ends ({end:g}) before it starts ({start:g})")
        step = parts[2].strip() if len(parts) == 3 else "1"
        if step[:1] in ("x", "*"):
            factor = _number(step[1:], False, what)
            if factor <= 1:
                raise ValueError(f"{what}: factor in {item!r} must be above 1, got {factor:g}")
            value, n = start, 0
            while value <= end * (1 + 1e-9):
                levels.append(round(value) if integer else value)
                n += 1
                value = start * factor**n
                if len(levels) > MAX_LEVELS:
                    break
        else:
            inc = _number(step, integer, what)
            value = start
            while value <= end * (1 + 1e-9) and len(levels) <= MAX_LEVELS:
                levels.append(value)
                value += inc
        if len(levels) > MAX_LEVELS:
            raise ValueError(f"{what}: {item!r} gives more than {MAX_LEVELS} levels")
    unique: list[float] = []
    for v in levels:
        if v not in unique:
            unique.append(v)
    if len(unique) > MAX_LEVELS:
        raise ValueError(f"{what}: {text!r} gives more than {MAX_LEVELS} levels")
    return unique


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values (the smallest value with at least p% of
    the values at or below it); NaN for no values."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    n = len(sorted_values)
    if n == 0:
        return math.nan
    rank = max(1, math.ceil(p / 100 * n))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latencies in seconds over the successful requests of one step."""

    count: int
    avg: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, latencies: Sequence[float]) -> LatencySummary:
        values = sorted(latencies)
        if not values:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)
        return cls(
            count=len(values),
            avg=math.fsum(values) / len(values),
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            max=values[-1],
        )
