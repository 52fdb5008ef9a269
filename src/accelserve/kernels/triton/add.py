"""Broadcasting add in Triton over the [R, C] view from ``_broadcast.plan_2d``: a repeated
operand has stride 0 along the dimension it is broadcast on, so it is never materialized.
One program per [BLOCK_R, BLOCK_C] tile; float32 math, one rounding on store."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from accelserve.kernels._broadcast import plan_2d
from accelserve.kernels.triton._launch import check_tensors, device_guard, interpreted, next_pow2


@triton.jit
def _add_kernel(
    a_ptr, b_ptr, out_ptr, R, C,
    stride_ar, stride_ac, stride_br, stride_bc,
    BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    tiles_c = tl.cdiv(C, BLOCK_C)
    rows = ((pid // tiles_c) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    cols = (pid % tiles_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    live = (rows[:, None] < R) & (cols[None, :] < C)
    a = tl.load(a_ptr + rows[:, None] * stride_ar + cols[None, :] * stride_ac, mask=live)
    b = tl.load(b_ptr + rows[:, None] * stride_br + cols[None, :] * stride_bc, mask=live)
    total = a.to(tl.float32) + b.to(tl.float32)
    tl.store(
        out_ptr + rows[:, None] * C + cols[None, :], total.to(out_ptr.dtype.element_ty), mask=live
    )


def add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    check_tensors("add", _add_kernel, a, b)
    plan = plan_2d(tuple(a.shape), tuple(b.shape))
    if plan is None:  # more than two broadcast groups: materialize, then add flat
        shape = torch.broadcast_shapes(a.shape, b.shape)
        a, b = a.expand(shape).contiguous(), b.expand(shape).contiguous()
        plan = plan_2d(tuple(a.shape), tuple(b.shape))
        assert plan is not None
    a, b = a.contiguous(), b.contiguous()
    out = torch.empty(plan.out_shape, dtype=a.dtype, device=a.device)
    cap = 64 if interpreted(_add_kernel) else 1024
    block_c = min(next_pow2(plan.cols), cap)
    block_r = min(next_pow2(plan.rows), max(1, (16 if cap == 64 else 4096) // block_c))
    grid = (triton.cdiv(plan.rows, block_r) * triton.cdiv(plan.cols, block_c),)
    with device_guard(a):
        _add_kernel[grid](
            a, b, out, plan.rows, plan.cols, *plan.strides(plan.a_full), *plan.strides(plan.b_full),
            BLOCK_R=block_r, BLOCK_C=block_c, num_warps=4,
        )  # fmt: skip
    return out
