"""L2 normalization in Triton.

Innermost axis: one program per row. When the row fits one block (BLOCK_N >= n, up to 16384
elements) it is loaded once, reduced and scaled from registers: one read and one write of HBM.
Longer rows take two loops (the second read mostly hits L2). Other axes: one program per
[outer, strip of columns] walks the reduced axis twice. Math in float32; NaN norms propagate.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from accelserve.kernels.triton._launch import (
    check_tensors,
    device_guard,
    interpreted,
    next_pow2,
    warps_for,
)

MAX_ONE_PASS = 16384


@triton.jit
def _denominator(sumsq, eps):
    norm = tl.sqrt(sumsq)
    return tl.where((norm > eps) | (norm != norm), norm, eps)  # max() that keeps NaN


@triton.jit
def _l2_normalize_rows_kernel(
    x_ptr, out_ptr, n, stride_x, stride_out, eps,
    BLOCK_N: tl.constexpr, ONE_PASS: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    x_row = x_ptr + row * stride_x
    out_row = out_ptr + row * stride_out
    if ONE_PASS:
        x = tl.load(x_row + cols, mask=cols < n, other=0.0).to(tl.float32)
        inv = 1.0 / _denominator(tl.sum(x * x, axis=0), eps)
        tl.store(out_row + cols, (x * inv).to(out_ptr.dtype.element_ty), mask=cols < n)
    else:
        acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for k0 in range(0, n, BLOCK_N):
            x = tl.load(x_row + k0 + cols, mask=k0 + cols < n, other=0.0).to(tl.float32)
            acc += x * x
        inv = 1.0 / _denominator(tl.sum(acc, axis=0), eps)
        for k0 in range(0, n, BLOCK_N):
            x = tl.load(x_row + k0 + cols, mask=k0 + cols < n, other=0.0).to(tl.float32)
            tl.store(
                out_row + k0 + cols, (x * inv).to(out_ptr.dtype.element_ty), mask=k0 + cols < n
            )


@triton.jit
def _l2_normalize_strips_kernel(
    x_ptr, out_ptr, n, inner, eps,
    BLOCK_I: tl.constexpr,
):  # fmt: skip
    o = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    live = cols < inner
    acc = tl.zeros((BLOCK_I,), dtype=tl.float32)
    for k in range(0, n):
        x = tl.load(x_ptr + (o * n + k) * inner + cols, mask=live, other=0.0).to(tl.float32)
        acc += x * x
    inv = 1.0 / _denominator(acc, eps)
    for k in range(0, n):
        x = tl.load(x_ptr + (o * n + k) * inner + cols, mask=live, other=0.0).to(tl.float32)
        tl.store(
            out_ptr + (o * n + k) * inner + cols, (x * inv).to(out_ptr.dtype.element_ty), mask=live
        )


def rows_2d(v: torch.Tensor, out: torch.Tensor, eps: float) -> None:
    """Normalize each row of 2-d ``v`` (unit stride along rows) into ``out`` (may be ``v``)."""
    rows, n = v.shape
    cap = 64 if interpreted(_l2_normalize_rows_kernel) else MAX_ONE_PASS
    block = min(next_pow2(n), cap)
    _l2_normalize_rows_kernel[(rows,)](
        v, out, n, v.stride(0), out.stride(0), eps,
        BLOCK_N=block, ONE_PASS=block >= n, num_warps=warps_for(block),
    )  # fmt: skip


def l2_normalize(x: torch.Tensor, axis: int = -1, eps: float = 1e-12) -> torch.Tensor:
    check_tensors("l2_normalize", _l2_normalize_rows_kernel, x)
    v = x.contiguous()
    shape = tuple(v.shape)
    axis %= len(shape)
    outer, n, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    out = torch.empty_like(v)
    with device_guard(v):
        if inner == 1:
            rows_2d(v.view(outer, n), out.view(outer, n), eps)
        else:
            block = min(next_pow2(inner), 64 if interpreted(_l2_normalize_rows_kernel) else 512)
            grid = (outer, triton.cdiv(inner, block))
            _l2_normalize_strips_kernel[grid](
                v, out, n, inner, eps, BLOCK_I=block, num_warps=warps_for(block)
            )
    return out
