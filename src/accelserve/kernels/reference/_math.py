"""Float64 helpers shared by the reference ops."""

from __future__ import annotations

import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def activate(v: np.ndarray, activation: str | None) -> np.ndarray:
    """relu / exact gelu / silu in float64; NaN stays NaN (relu(NaN) is NaN, as in torch)."""
    if activation is None:
        return v
    if activation == "relu":
        return np.where(v < 0, 0.0, v)
    if activation == "gelu":
        return 0.5 * v * (1.0 + _erf(v / math.sqrt(2.0)))
    if activation == "silu":
        return v * (1.0 / (1.0 + np.exp(-v)))
    raise ValueError(f"activation {activation!r}")
