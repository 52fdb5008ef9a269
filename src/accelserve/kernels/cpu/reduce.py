"""Blockwise sum and mean on CPU.

The input is viewed as [outer, n, inner] with the reduced axis in the middle. When the reduced
axis is innermost (rows), each block reduces a [row, column-chunk] slice to a partial with a
vectorized loop, and the partials are reduced afterwards (one chunk per row when there are
enough rows to keep every core busy). Otherwise each block accumulates a strip of ``inner``
columns over n. Accumulation is float32 for 16-bit and float32 input, float64 for float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from accelserve.kernels.cpu._numba import compute_dtype, contiguous, kernel, quiet

CHUNK = 1 << 14  # elements per block when a row is split
STRIP = 2048  # columns per block when the reduced axis is not innermost (8 KiB of f32)


def _row_partials(x, chunk, zero, out):
    rows, n = x.shape
    nchunks = out.shape[1]
    for t in prange(rows * nchunks):
        i = t // nchunks
        lo = (t % nchunks) * chunk
        hi = min(lo + chunk, n)
        row = x[i, lo:hi]  # 0-based loops over slices: numba can prove indices >= 0 and vectorize
        acc = zero
        for j in range(row.shape[0]):
            acc += row[j]
        out[i, t % nchunks] = acc


def _strip_sums(x, strip, out):
    outer, n, inner = x.shape
    nstrips = (inner + strip - 1) // strip
    for t in prange(outer * nstrips):
        o = t // nstrips
        lo = (t % nstrips) * strip
        hi = min(lo + strip, inner)
        acc = np.zeros(hi - lo, dtype=out.dtype)  # private: no aliasing with x, stays in L1
        for k in range(n):
            row = x[o, k, lo:hi]
            for j in range(acc.shape[0]):
                acc[j] += row[j]
        dst = out[o, lo:hi]
        for j in range(acc.shape[0]):
            dst[j] = acc[j]


_row_partials_k = kernel(_row_partials)
_strip_sums_k = kernel(_strip_sums)


def _sum(x: np.ndarray, axis: int | None) -> tuple[np.ndarray, int]:
    """The sum (in the compute dtype) and the number of elements reduced."""
    acc = compute_dtype(x)
    v = contiguous(x, acc)
    zero = acc.type(0)
    full = axis is None
    if axis is None:
        v, axis = v.reshape(1, -1), 1
    shape = v.shape
    outer, n, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    out_shape = shape[:axis] + shape[axis + 1 :]
    if inner == 1:
        rows = v.reshape(outer, n)
        chunk = n if outer >= 64 else CHUNK
        partials = np.empty((outer, -(-n // chunk)), dtype=acc)
        _row_partials_k(rows, chunk, zero, partials, work_bytes=v.nbytes)
        # Partials of split rows are combined in float64: cheap, and keeps long sums exact.
        total = partials[:, 0] if chunk == n else partials.sum(axis=1, dtype=np.float64)
    else:
        total = np.empty((outer, inner), dtype=acc)
        _strip_sums_k(v.reshape(outer, n, inner), STRIP, total, work_bytes=v.nbytes)
    return total.reshape(() if full else out_shape).astype(acc, copy=False), n


@quiet
def reduce_sum(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    total, _ = _sum(x, axis)
    return np.asarray(total, dtype=x.dtype)


@quiet
def reduce_mean(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    total, n = _sum(x, axis)
    return np.asarray(total * total.dtype.type(1.0 / n), dtype=x.dtype)
