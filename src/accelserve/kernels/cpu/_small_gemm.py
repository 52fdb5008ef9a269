"""Small-batch GEMM on CPU: ``x @ w`` for few rows of ``x`` and a weight stored transposed.

A served batch has few rows (1 to 64) against a weight matrix that never changes. BLAS's GEMM
re-packs the whole weight matrix into its panel layout on every call, which at a handful of
rows costs more than the multiply itself (measured on the 2-core EPYC (Zen 5) development VM,
one thread: OpenBLAS 33 us for 8 x 256 @ 256 x 512, this kernel 14 us; 2.3x to 1.1x faster
from 2 to 128 rows for K, N from 256 to 4096; one row: as fast as BLAS's GEMV, within 1 us).
It also keeps to the provider's thread policy (``_numba``): OpenBLAS runs even GEMV on every
core, and on a 2-core host where another thread wants a core, that turned 0.1 ms layers into
10-60 ms stalls (measured here). Here the weight arrives as ``wt`` [N, K] (row ``j`` holds
column ``j`` of ``w``: a Fortran-ordered ``w`` viewed as ``w.T``), so each output is a dot
product of two contiguous rows. Tiles of 4 rows of ``x`` by 4 rows of ``wt`` keep 16
accumulators in registers; the K loop vectorizes (fastmath ``reassoc``) with 8 loads per 16
multiply-adds. Rows left over when M is not a multiple of 4 run as 1 x 4 tiles, columns left
over as single dot products. ``gemm_block`` computes one block of output columns; the kernels
in ``linear`` split the columns into blocks of ``BLOCK_N`` over threads (``prange``) and finish
each block (bias, activation) while it is in cache.
"""

from __future__ import annotations

from numba import njit

from accelserve.kernels.cpu._numba import FASTMATH

MAX_ROWS = 128  # measured faster than one-thread OpenBLAS up to 128 rows (K, N 64 to 4096)
BLOCK_N = 32  # output columns per parallel task (a multiple of 4)


@njit(fastmath=FASTMATH, inline="always", cache=True)
def gemm_block(x, wt, j0, j1, out):
    """``out[:, j0:j1] = x @ wt[j0:j1].T`` for C-contiguous ``x`` [M, K], ``wt`` [N, K]."""
    m, k = x.shape
    m4 = m - m % 4
    j4 = j0 + (j1 - j0) // 4 * 4
    zero = out.dtype.type(0)
    for i in range(0, m4, 4):
        x0, x1, x2, x3 = x[i], x[i + 1], x[i + 2], x[i + 3]
        for j in range(j0, j4, 4):
            w0, w1, w2, w3 = wt[j], wt[j + 1], wt[j + 2], wt[j + 3]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = zero
            for p in range(k):
                a0, a1, a2, a3 = x0[p], x1[p], x2[p], x3[p]
                b0, b1, b2, b3 = w0[p], w1[p], w2[p], w3[p]
                s00 += a0 * b0
                s01 += a0 * b1
                s02 += a0 * b2
                s03 += a0 * b3
                s10 += a1 * b0
                s11 += a1 * b1
                s12 += a1 * b2
                s13 += a1 * b3
                s20 += a2 * b0
                s21 += a2 * b1
                s22 += a2 * b2
                s23 += a2 * b3
                s30 += a3 * b0
                s31 += a3 * b1
                s32 += a3 * b2
                s33 += a3 * b3
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
            out[i + 1, j], out[i + 1, j + 1] = s10, s11
            out[i + 1, j + 2], out[i + 1, j + 3] = s12, s13
            out[i + 2, j], out[i + 2, j + 1] = s20, s21
            out[i + 2, j + 2], out[i + 2, j + 3] = s22, s23
            out[i + 3, j], out[i + 3, j + 1] = s30, s31
            out[i + 3, j + 2], out[i + 3, j + 3] = s32, s33
    for i in range(m4, m):
        xi = x[i]
        for j in range(j0, j4, 4):
            w0, w1, w2, w3 = wt[j], wt[j + 1], wt[j + 2], wt[j + 3]
            s0 = s1 = s2 = s3 = zero
            for p in range(k):
                a = xi[p]
                s0 += a * w0[p]
                s1 += a * w1[p]
                s2 += a * w2[p]
                s3 += a * w3[p]
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s0, s1, s2, s3
    for j in range(j4, j1):
        wj = wt[j]
        for i in range(m):
            xi = x[i]
            s = zero
            for p in range(k):
                s += xi[p] * wj[p]
            out[i, j] = s
