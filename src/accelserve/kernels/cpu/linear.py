"""Linear layer on CPU: BLAS for x @ w into a float32 (or float64) buffer, then one fused
numba pass, parallel over rows, adds the bias and applies the activation in place.

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

import numpy as np
from numba import njit, prange

from accelserve.kernels.cpu._numba import FASTMATH, compute_dtype, contiguous, kernel, quiet

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


def _epilogue_f32(y, bias, has_bias, act):
    rows, n = y.shape
    half, one, zero = _F(0.5), _F(1.0), _F(0.0)
    scale = _F(_INV_SQRT2)
    for i in prange(rows):
        row = y[i]
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


def _epilogue_f64(y, bias, has_bias, act):
    rows, n = y.shape
    for i in prange(rows):
        row = y[i]
        for j in range(n):
            v = row[j] + bias[j] if has_bias else row[j]
            if act == 1:
                v = 0.0 if v < 0.0 else v
            elif act == 2:
                v = 0.5 * v * (1.0 + math.erf(v * _INV_SQRT2))
            elif act == 3:
                v = v * (1.0 / (1.0 + math.exp(-v)))
            row[j] = v


_epilogue_f32_k = kernel(_epilogue_f32)
_epilogue_f64_k = kernel(_epilogue_f64)


@quiet
def linear(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, activation: str | None = None
) -> np.ndarray:
    acc = compute_dtype(x)
    k, n = w.shape
    x2 = np.asarray(x, dtype=acc).reshape(-1, k)
    y = np.matmul(x2, np.asarray(w, dtype=acc))
    if b is not None or activation is not None:
        bias = contiguous(b, acc) if b is not None else np.zeros(1, dtype=acc)
        epilogue = _epilogue_f64_k if acc == np.float64 else _epilogue_f32_k
        epilogue(y, bias, b is not None, ACTIVATION_CODES[activation], work_bytes=y.nbytes)
    y = y.reshape(*x.shape[:-1], n)
    return y if y.dtype == x.dtype else y.astype(x.dtype)
