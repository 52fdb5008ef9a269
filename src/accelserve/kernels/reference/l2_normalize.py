"""Reference L2 normalization: x / max(||x||_2, eps) along one axis, in float64."""

from __future__ import annotations

import numpy as np

from accelserve.kernels.reference._math import f64


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    with np.errstate(all="ignore"):
        v = f64(x)
        norm = np.sqrt(np.sum(v * v, axis=axis, keepdims=True))
        return (v / np.maximum(norm, eps)).astype(x.dtype)  # np.maximum keeps NaN norms
