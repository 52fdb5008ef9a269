"""Reference linear layer: activation(x @ w + b) in float64."""

from __future__ import annotations

import numpy as np

from accelserve.kernels.reference._math import activate, f64


def linear(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, activation: str | None = None
) -> np.ndarray:
    with np.errstate(all="ignore"):
        y = f64(x) @ f64(w)
        if b is not None:
            y = y + f64(b)
        return activate(y, activation).astype(x.dtype)
