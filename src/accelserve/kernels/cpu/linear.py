"""Linear layer on CPU: x @ w into a float32 (or float64) buffer, then one fused numba pass,
parallel over rows, adds the bias and applies the activation in place.

x @ w is BLAS, except for batches of up to ``MAX_ROWS`` rows against a Fortran-ordered ``w``
(the layout the native backend stores at load): those run the small-batch kernel of
``_small_gemm``, which reads ``w.T`` row by row instead of re-packing ``w`` on every call, and
follows the provider's thread policy where BLAS would start its own threads.

No libm call vectorizes here (numba has no SVML without Intel's runtime), so the float32 pass
evaluates erf and tanh as odd rational functions x * P(x^2) / Q(x^2), fitted for this module
(least squares, Sanathanan-Koerner iteration) on [0, 4] and [0, 9], beyond which erf and tanh
are +-1 in float32. Measured error in float32: <= 3.5e-7 absolute; the tails
return exactly +-1, so gelu(-inf) and silu(-inf) are NaN as in the reference. gelu uses erf (the exact
form, not the tanh approximation); silu uses sigmoid(v) = (1 + tanh(v / 2)) / 2. The float64
pass uses math.erf and math.exp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit, prange

from accelserve.kernels.cpu._numba import (
    FASTMATH,
    LazyKernel,
    _max_threads,
    compute_dtype,
    contiguous,
    kernel,
    quiet,
    threads_for,
)
from accelserve.kernels.cpu._small_gemm import BLOCK_N, MAX_ROWS, gemm_block

ACTIVATION_CODES = {None: 0, "relu": 1, "gelu": 2, "silu": 3}
_F = np.float32
# Odd rational fits: f(x) = x * P(x^2) / Q(x^2), coefficients lowest degree first.
E0, E1, E2, E3, E4, E5 = (_F(1.1283791065216064), _F(0.1916729211807251), _F(0.0528525710105896),
                          _F(0.003803411265835166), _F(0.0002828319848049432),
                          _F(2.00146428142034e-06))  # fmt: skip
D0, D1, D2, D3, D4, D5 = (_F(1.0), _F(0.5031986236572266), _F(0.11457489430904388),
                          _F(0.015046131797134876), _F(0.0011663703480735421),
                          _F(3.748284507310018e-05))  # fmt: skip
T0, T1, T2, T3, T4 = (_F(1.0), _F(0.13385009765625), _F(0.003500188235193491),
                      _F(2.067943205474876e-05), _F(1.3442078561354265e-08))  # fmt: skip
U0, U1, U2, U3, U4 = (_F(1.0), _F(0.46718332171440125), _F(0.025894824415445328),
                      _F(0.0003292927285656333), _F(7.814463174327102e-07))  # fmt: skip
_INV_SQRT2 = 1.0 / math.sqrt(2.0)


# Written as straight-line Horner steps and inlined: LLVM then vectorizes the calling loop
# (a loop over a tuple of coefficients kept it scalar, 15x slower).
@njit(fastmath=FASTMATH, inline="always", cache=True)
def _erf32(x):
    x = min(max(x, _F(-4.0)), _F(4.0))
    z = x * x
    p = ((((E5 * z + E4) * z + E3) * z + E2) * z + E1) * z + E0
    q = ((((D5 * z + D4) * z + D3) * z + D2) * z + D1) * z + D0
    r = x * p / q
    return _F(1.0) if x >= _F(4.0) else (_F(-1.0) if x <= _F(-4.0) else r)  # exact +-1 tails


@njit(fastmath=FASTMATH, inline="always", cache=True)
def _tanh32(x):
    x = min(max(x, _F(-9.0)), _F(9.0))
    z = x * x
    p = (((T4 * z + T3) * z + T2) * z + T1) * z + T0
    q = (((U4 * z + U3) * z + U2) * z + U1) * z + U0
    r = x * p / q
    return _F(1.0) if x >= _F(9.0) else (_F(-1.0) if x <= _F(-9.0) else r)  # exact +-1 tails


@njit(fastmath=FASTMATH, inline="always", cache=True)
def _finish_f32(row, bias, has_bias, act):
    """Bias and activation on one float32 row, in place."""
    n = row.shape[0]
    half, one, zero = _F(0.5), _F(1.0), _F(0.0)
    scale = _F(_INV_SQRT2)
    if has_bias:
        for j in range(n):
            row[j] += bias[j]
    # One loop per activation, so each loop is branch-free and vectorizes.
    if act == 1:
        for j in range(n):
            row[j] = zero if row[j] < zero else row[j]  # NaN passes through
    elif act == 2:
        for j in range(n):
            v = row[j]
            row[j] = half * v * (one + _erf32(v * scale))
    elif act == 3:
        for j in range(n):
            v = row[j]
            row[j] = v * (half + half * _tanh32(half * v))


@njit(fastmath=FASTMATH, inline="always", cache=True)
def _finish_f64(row, bias, has_bias, act):
    for j in range(row.shape[0]):
        v = row[j] + bias[j] if has_bias else row[j]
        if act == 1:
            v = 0.0 if v < 0.0 else v
        elif act == 2:
            v = 0.5 * v * (1.0 + math.erf(v * _INV_SQRT2))
        elif act == 3:
            v = v * (1.0 / (1.0 + math.exp(-v)))
        row[j] = v


def _epilogue_f32(y, bias, has_bias, act):
    for i in prange(y.shape[0]):
        _finish_f32(y[i], bias, has_bias, act)


def _epilogue_f64(y, bias, has_bias, act):
    for i in prange(y.shape[0]):
        _finish_f64(y[i], bias, has_bias, act)


# Small batches against w.T (see _small_gemm): one task per block of output columns computes
# them for every row, then adds the bias and applies the activation while they are in cache.
@njit(fastmath=FASTMATH, inline="always", cache=True)
def _dense_block_f32(x, wt, bias, has_bias, act, j0, j1, out):
    gemm_block(x, wt, j0, j1, out)
    if has_bias or act != 0:
        b = bias[j0:j1] if has_bias else bias
        for i in range(x.shape[0]):
            _finish_f32(out[i, j0:j1], b, has_bias, act)


@njit(fastmath=FASTMATH, inline="always", cache=True)
def _dense_block_f64(x, wt, bias, has_bias, act, j0, j1, out):
    gemm_block(x, wt, j0, j1, out)
    if has_bias or act != 0:
        b = bias[j0:j1] if has_bias else bias
        for i in range(x.shape[0]):
            _finish_f64(out[i, j0:j1], b, has_bias, act)


def _dense_f32(x, wt, bias, has_bias, act, block_n, out):
    n = wt.shape[0]
    for t in prange((n + block_n - 1) // block_n):
        j0 = t * block_n
        _dense_block_f32(x, wt, bias, has_bias, act, j0, min(j0 + block_n, n), out)


def _dense_f64(x, wt, bias, has_bias, act, block_n, out):
    n = wt.shape[0]
    for t in prange((n + block_n - 1) // block_n):
        j0 = t * block_n
        _dense_block_f64(x, wt, bias, has_bias, act, j0, min(j0 + block_n, n), out)


def _chain_f32(x, wts, biases, has_bias, acts, block_n):
    y = x
    for layer in range(len(wts)):
        wt, bias, with_bias, act = wts[layer], biases[layer], has_bias[layer], acts[layer]
        n = wt.shape[0]
        out = np.empty((y.shape[0], n), dtype=np.float32)
        for t in prange((n + block_n - 1) // block_n):
            j0 = t * block_n
            _dense_block_f32(y, wt, bias, with_bias, act, j0, min(j0 + block_n, n), out)
        y = out
    return y


def _chain_row_f32(x, ws, biases, has_bias, acts):
    """One row through the chain on one thread, each layer as a sum of rows of a C-ordered
    ``w`` scaled by the row's elements (``y += x[p] * w[p]``): no horizontal sums per output
    column, and ``w`` is read front to back."""
    y = x[0]
    for layer in range(len(ws)):
        w = ws[layer]
        k, n = w.shape
        out = biases[layer].copy() if has_bias[layer] else np.zeros(n, dtype=np.float32)
        for p in range(k):
            v = y[p]
            row = w[p]
            for j in range(n):
                out[j] += v * row[j]
        _finish_f32(out, out, False, acts[layer])
        y = out
    return y.reshape(1, y.shape[0])


_epilogue_f32_k = kernel(_epilogue_f32)
_epilogue_f64_k = kernel(_epilogue_f64)
_dense_f32_k = kernel(_dense_f32)
_dense_f64_k = kernel(_dense_f64)
_chain_f32_k = kernel(_chain_f32)
_chain_row_f32_k = LazyKernel(_chain_row_f32, parallel=False)


def _block(work_bytes: int) -> int:
    """Output columns per task of the small-batch kernels: all of them when the call runs on
    one thread (the bias and activation pass then sweeps whole rows), else ``BLOCK_N``."""
    return 1 << 30 if threads_for(work_bytes, _max_threads()) == 1 else BLOCK_N


@quiet
def linear(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, activation: str | None = None
) -> np.ndarray:
    acc = compute_dtype(x)
    k, n = w.shape
    x2 = np.asarray(x, dtype=acc).reshape(-1, k)
    rows = x2.shape[0]
    bias = contiguous(b, acc) if b is not None else np.zeros(1, dtype=acc)
    code = ACTIVATION_CODES[activation]
    if w.flags.f_contiguous and rows <= MAX_ROWS:
        # A Fortran-ordered w (how the native backend keeps its weights) is w.T row-major:
        # the small-batch kernel skips BLAS's per-call packing of w.
        y = np.empty((rows, n), dtype=acc)
        dense = _dense_f64_k if acc == np.float64 else _dense_f32_k
        wt = np.asarray(w.T, dtype=acc, order="C")
        dense(
            np.ascontiguousarray(x2),
            wt,
            bias,
            b is not None,
            code,
            _block(wt.nbytes),
            y,
            work_bytes=wt.nbytes,
        )
    else:
        y = np.matmul(x2, np.asarray(w, dtype=acc))
        if b is not None or activation is not None:
            epilogue = _epilogue_f64_k if acc == np.float64 else _epilogue_f32_k
            epilogue(y, bias, b is not None, code, work_bytes=y.nbytes)
    y = y.reshape(*x.shape[:-1], n)
    return y if y.dtype == x.dtype else y.astype(x.dtype)


class LinearChain:
    """Consecutive linear layers ``(w, b, activation)`` run in float32 by one compiled call per
    batch: the per-layer Python work of :func:`linear` (a few microseconds a layer) is what a
    one-row request through a small MLP spends most of its time in. The weights are read as
    ``w.T``; a Fortran-ordered float32 ``w`` is used without a copy, other dtypes (FP16, BF16)
    are converted once, here (``extra_bytes`` counts every copy).

    A single row, when the chain runs on one thread, takes ``_chain_row_f32`` over a C-ordered
    copy of the weights instead (``extra_bytes`` counts it): with one row the dot products'
    horizontal sums cost more than streaming ``w`` once (measured on the 2-core development VM,
    MLP 256-512-512-256 with GELU: benchmarks/server/bench_native_cpu.py, PERFORMANCE.md
    ``native-cpu``). ``one_row_kernel=False`` sends single rows to the batch kernel instead
    (that benchmark's baseline)."""

    def __init__(
        self,
        layers: Sequence[tuple[np.ndarray, np.ndarray | None, str | None]],
        one_row_kernel: bool = True,
    ):
        f32 = np.dtype(np.float32)
        self.k, self.n = int(layers[0][0].shape[0]), int(layers[-1][0].shape[1])
        self._layers = [(w, b, a) for w, b, a in layers]
        self._wts = tuple(np.asarray(w.T, dtype=f32, order="C") for w, _, _ in layers)
        self._biases = tuple(
            np.zeros(1, f32) if b is None else contiguous(b, f32) for _, b, _ in layers
        )
        self._has_bias = np.array([b is not None for _, b, _ in layers], dtype=np.bool_)
        self._acts = np.array([ACTIVATION_CODES[a] for _, _, a in layers], dtype=np.int64)
        self._work = sum(wt.nbytes for wt in self._wts)
        self._ws: tuple[np.ndarray, ...] | None = None
        if one_row_kernel and threads_for(self._work, _max_threads()) == 1:
            self._ws = tuple(np.ascontiguousarray(w, dtype=f32) for w, _, _ in layers)
        self.extra_bytes = sum(  # what the chain holds beyond the caller's arrays
            a.nbytes
            for arrays in (self._wts, self._ws)
            if arrays is not None
            for a, (w, _, _) in zip(arrays, layers, strict=True)
            if not np.shares_memory(a, w)
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x`` float32 [..., K] -> float32 [..., N] (NaN and Inf propagate, silently: no
        NumPy operation here can warn)."""
        x2 = np.ascontiguousarray(x.reshape(-1, self.k), dtype=np.float32)
        if x2.shape[0] == 1 and self._ws is not None:
            args1 = (self._ws, self._biases, self._has_bias, self._acts)
            y = _chain_row_f32_k(x2, *args1, work_bytes=0)
        elif x2.shape[0] > MAX_ROWS:  # big batches: BLAS, layer by layer
            y = x2
            for w, b, activation in self._layers:
                y = linear(y, w, b, activation)
        else:
            args = (self._wts, self._biases, self._has_bias, self._acts, _block(self._work))
            y = _chain_f32_k(x2, *args, work_bytes=self._work)
        return y.reshape(*x.shape[:-1], self.n)
