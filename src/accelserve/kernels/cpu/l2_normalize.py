"""L2 normalization on CPU in one pass over memory.

Innermost axis: each row is read once into cache to accumulate its sum of squares, then scaled
from cache (a 1024-float row is 4 KiB, so the second read never reaches DRAM). Other axes: each
block takes a strip of ``inner`` columns and does the same down the reduced axis.
NaN rows stay NaN and all-zero rows stay zero, as in the reference.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from accelserve.kernels.cpu._numba import compute_dtype, contiguous, kernel, quiet

STRIP = 1024


def _rows(x, eps, zero, out):
    rows, n = x.shape
    for i in prange(rows):
        row, dst = x[i], out[i]
        acc = zero
        for j in range(n):
            acc += row[j] * row[j]
        norm = np.sqrt(acc)
        denom = norm if (norm > eps or norm != norm) else eps  # max() that keeps NaN
        inv = 1.0 / denom
        for j in range(n):
            dst[j] = row[j] * inv


def _strips(x, eps, out):
    outer, n, inner = x.shape
    nstrips = (inner + STRIP - 1) // STRIP
    for t in prange(outer * nstrips):
        o = t // nstrips
        lo = (t % nstrips) * STRIP
        hi = min(lo + STRIP, inner)
        acc = np.zeros(hi - lo, dtype=x.dtype)
        width = acc.shape[0]
        for k in range(n):
            row = x[o, k, lo:hi]
            for j in range(width):
                acc[j] += row[j] * row[j]
        for j in range(width):
            norm = np.sqrt(acc[j])
            acc[j] = 1.0 / (norm if (norm > eps or norm != norm) else eps)
        for k in range(n):
            row, dst = x[o, k, lo:hi], out[o, k, lo:hi]
            for j in range(width):
                dst[j] = row[j] * acc[j]


_rows_k = kernel(_rows)
_strips_k = kernel(_strips)


@quiet
def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    acc = compute_dtype(x)
    v = contiguous(x, acc)
    axis = axis % v.ndim
    shape = v.shape
    outer, n, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    out = np.empty(shape, dtype=acc)
    e = acc.type(eps)
    if inner == 1:
        rows = (outer, n)
        _rows_k(v.reshape(rows), e, acc.type(0), out.reshape(rows), work_bytes=2 * v.nbytes)
    else:
        flat = (outer, n, inner)
        _strips_k(v.reshape(flat), e, out.reshape(flat), work_bytes=2 * v.nbytes)
    return out if out.dtype == x.dtype else out.astype(x.dtype)
