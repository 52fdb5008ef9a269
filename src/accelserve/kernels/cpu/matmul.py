"""Matrix multiplication on CPU.

``auto`` is BLAS (NumPy's sgemm/dgemm): on CPU a vendor GEMM is the right tool, and nothing
written here beats it. ``naive``, ``unrolled`` and ``blocked`` are the same algorithms as the
GPU/TPU kernels, compiled with numba and parallel over output rows or tiles, so the speed of
each algorithm can be measured on any machine. 16-bit inputs are computed in float32.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from accelserve.kernels.cpu._numba import compute_dtype, contiguous, kernel, quiet

UNROLL = 4
BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M = 64, 64, 256, 4


def _naive(a, b, out):
    m, k = a.shape
    n = b.shape[1]
    for i in prange(m):
        for j in range(n):
            acc = out.dtype.type(0)
            for p in range(k):
                acc += a[i, p] * b[p, j]
            out[i, j] = acc


def _unrolled(a, b, out):
    m, k = a.shape
    n = b.shape[1]
    main = k - k % 4
    for i in prange(m):
        for j in range(n):
            # Four independent accumulators: the unrolled steps do not wait on each other.
            s0 = out.dtype.type(0)
            s1 = out.dtype.type(0)
            s2 = out.dtype.type(0)
            s3 = out.dtype.type(0)
            for p in range(0, main, 4):
                s0 += a[i, p] * b[p, j]
                s1 += a[i, p + 1] * b[p + 1, j]
                s2 += a[i, p + 2] * b[p + 2, j]
                s3 += a[i, p + 3] * b[p + 3, j]
            for p in range(main, k):
                s0 += a[i, p] * b[p, j]
            out[i, j] = (s0 + s1) + (s2 + s3)


def _blocked(a, b, bm, bn, bk, group_m, out):
    m, k = a.shape
    n = b.shape[1]
    tiles_m = (m + bm - 1) // bm
    tiles_n = (n + bn - 1) // bn
    per_group = group_m * tiles_n
    for t in prange(tiles_m * tiles_n):
        # Grouped order: consecutive tiles share a band of ``a`` rows and reuse ``b`` strips.
        group = t // per_group
        first = group * group_m
        size = min(tiles_m - first, group_m)
        ti = first + (t % per_group) % size
        tj = (t % per_group) // size
        i0, j0 = ti * bm, tj * bn
        i1, j1 = min(i0 + bm, m), min(j0 + bn, n)
        acc = np.zeros((i1 - i0, j1 - j0), dtype=out.dtype)
        width = j1 - j0
        for k0 in range(0, k, bk):
            k1 = min(k0 + bk, k)
            for ii in range(i1 - i0):
                arow, crow = a[i0 + ii, k0:k1], acc[ii]
                for pp in range(k1 - k0):
                    av = arow[pp]
                    brow = b[k0 + pp, j0:j1]
                    for j in range(width):  # contiguous in b and acc: vectorizes
                        crow[j] += av * brow[j]
        out[i0:i1, j0:j1] = acc


_naive_k = kernel(_naive)
_unrolled_k = kernel(_unrolled)
_blocked_k = kernel(_blocked)


@quiet
def matmul(a: np.ndarray, b: np.ndarray, algorithm: str = "auto") -> np.ndarray:
    acc = compute_dtype(a)
    if algorithm == "auto":
        out = np.matmul(np.asarray(a, dtype=acc), np.asarray(b, dtype=acc))
    else:
        av, bv = contiguous(a, acc), contiguous(b, acc)
        out = np.empty((a.shape[0], b.shape[1]), dtype=acc)
        work = 8 * out.size * a.shape[1]  # compute-bound: always worth every core
        if algorithm == "naive":
            _naive_k(av, bv, out, work_bytes=work)
        elif algorithm == "unrolled":
            _unrolled_k(av, bv, out, work_bytes=work)
        else:
            _blocked_k(av, bv, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, out, work_bytes=work)
    return out if out.dtype == a.dtype else out.astype(a.dtype)
