"""Reference matmul: the naive, unrolled and blocked algorithms, spelled out in float64."""

from __future__ import annotations

import numpy as np

from accelserve.kernels.reference._math import f64

UNROLL = 4  # the K loop's unroll factor in ``unrolled``
BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 32  # tile of ``blocked``


def matmul(a: np.ndarray, b: np.ndarray, algorithm: str = "auto") -> np.ndarray:
    compute = {"naive": naive, "unrolled": unrolled, "blocked": blocked, "auto": auto}
    with np.errstate(all="ignore"):
        return compute[algorithm](f64(a), f64(b)).astype(a.dtype)


def naive(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One output element per iteration: the dot product of a row of ``a`` and a column of
    ``b``. Nothing is reused between outputs."""
    m, n = a.shape[0], b.shape[1]
    c = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            c[i, j] = np.dot(a[i, :], b[:, j])
    return c


def unrolled(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The K loop walks ``UNROLL`` steps per iteration (each step a rank-1 update), then a
    remainder loop finishes the K % UNROLL tail."""
    m, k = a.shape
    c = np.zeros((m, b.shape[1]))
    main = k - k % UNROLL
    for p in range(0, main, UNROLL):
        c += (
            np.outer(a[:, p], b[p])
            + np.outer(a[:, p + 1], b[p + 1])
            + np.outer(a[:, p + 2], b[p + 2])
            + np.outer(a[:, p + 3], b[p + 3])
        )
    for p in range(main, k):
        c += np.outer(a[:, p], b[p])
    return c


def blocked(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each [BLOCK_M, BLOCK_N] output tile accumulates products of [BLOCK_M, BLOCK_K] and
    [BLOCK_K, BLOCK_N] input tiles while K is walked in BLOCK_K steps. (Kernels also order the
    tiles in groups for cache reuse; the order does not change the result.)"""
    m, k = a.shape
    n = b.shape[1]
    c = np.zeros((m, n))
    for i0 in range(0, m, BLOCK_M):
        for j0 in range(0, n, BLOCK_N):
            acc = np.zeros((min(BLOCK_M, m - i0), min(BLOCK_N, n - j0)))
            for k0 in range(0, k, BLOCK_K):
                acc += (
                    a[i0 : i0 + BLOCK_M, k0 : k0 + BLOCK_K]
                    @ b[k0 : k0 + BLOCK_K, j0 : j0 + BLOCK_N]
                )
            c[i0 : i0 + BLOCK_M, j0 : j0 + BLOCK_N] = acc
    return c


def auto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a @ b
