"""Broadcasting add on CPU.

Large float32/float64 problems that collapse to [R, C] (same shapes, a row or column vector
broadcast, a scalar) run a numba kernel parallel over rows; everything else goes to NumPy's
ufunc, which is already one pass over memory on one core.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from accelserve.kernels._broadcast import plan_2d
from accelserve.kernels.cpu._numba import PARALLEL_MIN_BYTES, kernel, quiet

BLOCK = 1 << 14  # columns per block, so one long row still spreads over every core


def _add_2d(a, b, block, out):
    rows, cols = out.shape
    a_rows, a_cols = a.shape
    b_rows, b_cols = b.shape
    nblocks = (cols + block - 1) // block
    for t in prange(rows * nblocks):
        i = t // nblocks
        lo = (t % nblocks) * block
        hi = min(lo + block, cols)
        ra = a[i if a_rows > 1 else 0]
        rb = b[i if b_rows > 1 else 0]
        dst = out[i, lo:hi]
        if a_cols > 1 and b_cols > 1:
            sa, sb = ra[lo:hi], rb[lo:hi]
            for j in range(dst.shape[0]):
                dst[j] = sa[j] + sb[j]
        elif a_cols > 1:
            sa, vb = ra[lo:hi], rb[0]
            for j in range(dst.shape[0]):
                dst[j] = sa[j] + vb
        elif b_cols > 1:
            va, sb = ra[0], rb[lo:hi]
            for j in range(dst.shape[0]):
                dst[j] = va + sb[j]
        else:
            v = ra[0] + rb[0]
            for j in range(dst.shape[0]):
                dst[j] = v


_add_2d_k = kernel(_add_2d)


@quiet
def add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    plan = plan_2d(a.shape, b.shape)
    big = max(a.nbytes, b.nbytes) >= PARALLEL_MIN_BYTES
    if plan is None or not big or a.dtype not in (np.float32, np.float64):
        return np.add(a, b)
    out = np.empty(plan.out_shape, dtype=a.dtype)
    a2 = np.ascontiguousarray(a).reshape(plan.operand_shape(plan.a_full))
    b2 = np.ascontiguousarray(b).reshape(plan.operand_shape(plan.b_full))
    _add_2d_k(a2, b2, BLOCK, out.reshape(plan.rows, plan.cols), work_bytes=3 * out.nbytes)
    return out
