"""Blockwise sum and mean in Triton, float32 accumulation.

The input is viewed as [outer, n, inner] with the reduced axis in the middle.
- Rows (inner == 1), many of them: one program per row walks it in BLOCK_N vectors.
- Few long rows (or a full reduction): stage 1 splits every row into chunks, one program per
  [row, chunk] writes a float32 partial; stage 2 is the row kernel over the partials.
- inner > 1: one program per [outer, strip of BLOCK_I columns] accumulates down n, so loads stay
  coalesced along the contiguous axis.
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
    sm_count,
    warps_for,
)


@triton.jit
def _reduce_rows_kernel(
    x_ptr, out_ptr, n, stride_row, scale,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(0, n, BLOCK_N):
        x = tl.load(x_ptr + row * stride_row + k0 + cols, mask=k0 + cols < n, other=0.0)
        acc += x.to(tl.float32)
    total = tl.sum(acc, axis=0) * scale
    tl.store(out_ptr + row, total.to(out_ptr.dtype.element_ty))


@triton.jit
def _reduce_chunks_kernel(
    x_ptr, partial_ptr, n, stride_row, chunk, nchunks,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1)
    start = c * chunk
    stop = tl.minimum(start + chunk, n)
    cols = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for k0 in range(start, stop, BLOCK_N):
        x = tl.load(x_ptr + row * stride_row + k0 + cols, mask=k0 + cols < stop, other=0.0)
        acc += x.to(tl.float32)
    tl.store(partial_ptr + row * nchunks + c, tl.sum(acc, axis=0))


@triton.jit
def _reduce_strips_kernel(
    x_ptr, out_ptr, n, inner, scale,
    BLOCK_I: tl.constexpr,
):  # fmt: skip
    o = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    base = x_ptr + o * n * inner + cols
    acc = tl.zeros((BLOCK_I,), dtype=tl.float32)
    for k in range(0, n):
        acc += tl.load(base + k * inner, mask=cols < inner, other=0.0).to(tl.float32)
    tl.store(
        out_ptr + o * inner + cols, (acc * scale).to(out_ptr.dtype.element_ty), mask=cols < inner
    )


def _reduce(x: torch.Tensor, axis: int | None, mean: bool) -> torch.Tensor:
    check_tensors("reduce", _reduce_rows_kernel, x)
    v = x.contiguous()
    shape: tuple[int, ...] = tuple(v.shape)
    out_shape: tuple[int, ...]
    if axis is None:
        shape, axis, out_shape = (1, v.numel()), 1, ()
    else:
        out_shape = shape[:axis] + shape[axis + 1 :]
    outer, n, inner = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])
    scale = 1.0 / n if mean else 1.0
    out = torch.empty(out_shape, dtype=x.dtype, device=x.device)
    small = interpreted(_reduce_rows_kernel)
    with device_guard(v):
        if inner > 1:
            block = min(next_pow2(inner), 64 if small else 1024)
            grid = (outer, triton.cdiv(inner, block))
            _reduce_strips_kernel[grid](
                v, out, n, inner, scale, BLOCK_I=block, num_warps=warps_for(block)
            )
        else:
            rows_2d(v.view(outer, n), out.view(outer), scale)
    return out


def rows_2d(v: torch.Tensor, out: torch.Tensor, scale: float) -> None:
    """Sum each row of the contiguous 2-d ``v`` (times ``scale``) into ``out`` [rows]."""
    rows, n = v.shape
    small = interpreted(_reduce_rows_kernel)
    block = min(next_pow2(n), 128 if small else 4096)
    programs_wanted = 4 * sm_count(v)
    if rows >= programs_wanted or n <= 4 * block:
        _reduce_rows_kernel[(rows,)](v, out, n, n, scale, BLOCK_N=block, num_warps=warps_for(block))
        return
    # Few long rows: split them so every SM has work, then reduce the partials.
    nchunks = min(triton.cdiv(n, block), max(1, programs_wanted // rows))
    chunk = triton.cdiv(triton.cdiv(n, nchunks), block) * block
    nchunks = triton.cdiv(n, chunk)
    partials = torch.empty((rows, nchunks), dtype=torch.float32, device=v.device)
    _reduce_chunks_kernel[(rows, nchunks)](
        v, partials, n, n, chunk, nchunks, BLOCK_N=block, num_warps=warps_for(block)
    )
    pblock = min(next_pow2(nchunks), 1024)
    _reduce_rows_kernel[(rows,)](
        partials, out, nchunks, nchunks, scale, BLOCK_N=pblock, num_warps=warps_for(pblock)
    )


def reduce_sum(x: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    return _reduce(x, axis, mean=False)


def reduce_mean(x: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    return _reduce(x, axis, mean=True)
