"""Reference reductions, written as the blockwise algorithm the kernels use: every block of
``BLOCK`` elements reduces to a partial, then the partials are reduced."""

from __future__ import annotations

import numpy as np

from accelserve.kernels.reference._math import f64

BLOCK = 1024


def reduce_sum(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(_blockwise_sum(f64(x), axis), dtype=x.dtype)


def reduce_mean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    count = x.size if axis is None else x.shape[axis]
    with np.errstate(all="ignore"):
        return np.asarray(_blockwise_sum(f64(x), axis) / count, dtype=x.dtype)


def _blockwise_sum(x: np.ndarray, axis: int | None) -> np.ndarray:
    # Move the reduced elements to the last axis: rows of the 2-d view reduce independently.
    rows = x.reshape(1, -1) if axis is None else np.moveaxis(x, axis, -1)
    n = rows.shape[-1]
    partials = [rows[..., k0 : k0 + BLOCK].sum(axis=-1) for k0 in range(0, n, BLOCK)]
    total = np.sum(partials, axis=0)
    return total.reshape(()) if axis is None else total
