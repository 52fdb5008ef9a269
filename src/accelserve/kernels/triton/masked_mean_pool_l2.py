"""Fused sentence-embedding head in Triton.

Kernel 1, one program per [batch row, BLOCK_H strip of hidden]: walks the tokens in BLOCK_T
tiles; a tile's loads are predicated on the mask, so padded tokens are never fetched from
memory. It writes the float32 mean of its strip. Kernel 2 L2-normalizes each [H] row of that
small [B, H] result in place (the l2_normalize row kernel).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from accelserve.kernels.triton import l2_normalize as _l2
from accelserve.kernels.triton._launch import check_tensors, device_guard, interpreted, next_pow2


@triton.jit
def _masked_mean_pool_kernel(
    h_ptr, keep_ptr, out_ptr, T, H,
    stride_hb, stride_ht,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    hs = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    h_live = hs < H
    acc = tl.zeros((BLOCK_H,), dtype=tl.float32)
    count = tl.zeros((BLOCK_T,), dtype=tl.float32)
    for t0 in range(0, T, BLOCK_T):
        ts = t0 + tl.arange(0, BLOCK_T)
        keep = tl.load(keep_ptr + b * T + ts, mask=ts < T, other=0) != 0
        tile = tl.load(
            h_ptr + b * stride_hb + ts[:, None] * stride_ht + hs[None, :],
            mask=keep[:, None] & h_live[None, :],
            other=0.0,
        )
        acc += tl.sum(tile.to(tl.float32), axis=0)
        count += keep.to(tl.float32)
    mean = acc / tl.maximum(tl.sum(count, axis=0), 1.0)
    tl.store(out_ptr + b * H + hs, mean, mask=h_live)


def masked_mean_pool_l2(
    hidden: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    check_tensors("masked_mean_pool_l2", _masked_mean_pool_kernel, hidden, mask)
    h = hidden if hidden.stride(-1) == 1 else hidden.contiguous()
    keep = (mask != 0).to(torch.int8).contiguous()
    batch, tokens, width = h.shape
    out = torch.empty((batch, width), dtype=torch.float32, device=h.device)
    small = interpreted(_masked_mean_pool_kernel)
    block_h = min(next_pow2(width), 32 if small else 256)
    block_t = min(next_pow2(tokens), 8 if small else 16)
    with device_guard(h):
        grid = (batch, triton.cdiv(width, block_h))
        _masked_mean_pool_kernel[grid](
            h, keep, out, tokens, width, h.stride(0), h.stride(1),
            BLOCK_T=block_t, BLOCK_H=block_h, num_warps=4,
        )  # fmt: skip
        _l2.rows_2d(out, out, eps)
    return out
