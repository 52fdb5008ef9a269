"""masked_mean_pool_l2 against the vendor's expression (the sentence-transformers head).

Two masks: all tokens kept (every byte of hidden must be read: the bandwidth case) and
realistic padding (random lengths, about half the tokens kept). Bytes counted are those the
op must read: kept token rows, the mask, and the output written.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np

from accelserve import kernels
from benchmarks.kernels._common import (
    Context,
    Measurement,
    nbytes_of,
    vendor_name,
)

SHAPES = {
    "cpu": [(32, 128, 1024), (64, 256, 384)],
    "cuda": [(64, 512, 1024), (256, 128, 4096)],
    "tpu": [(64, 512, 1024)],
    "tiny": [(2, 8, 32)],
}
DTYPES = {
    "cpu": ["float32"],
    "cuda": ["float32", "bfloat16"],
    "tpu": ["bfloat16"],
    "tiny": ["float32"],
}
EPS = 1e-12


def _vendor(ctx: Context) -> Any:
    if ctx.device == "cuda":
        import torch
        import torch.nn.functional as F

        def head(h: Any, m: Any) -> Any:
            w = m.unsqueeze(-1).to(h.dtype)
            mean = (h * w).sum(1) / torch.clamp(w.sum(1), min=1e-9)
            return F.normalize(mean.float(), dim=-1, eps=EPS)

        return head
    if ctx.device == "tpu":
        import jax
        import jax.numpy as jnp

        def jhead(h: Any, m: Any) -> Any:
            w = m[:, :, None].astype(jnp.float32)
            mean = (h.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)
            return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), EPS)

        return jax.jit(jhead)

    def nhead(h: np.ndarray, m: np.ndarray) -> np.ndarray:
        w = m[:, :, None].astype(np.float32)
        mean = (h * w).sum(1) / np.maximum(w.sum(1), 1e-9)
        return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), EPS)

    return nhead


def run(ctx: Context) -> list[Measurement]:
    vendor_fn = _vendor(ctx)
    out: list[Measurement] = []
    op = "masked_mean_pool_l2"
    for dtype in DTYPES[ctx.key]:
        shapes = SHAPES[ctx.key][:1] if ctx.quick else SHAPES[ctx.key]
        for b, t, h in shapes:
            hidden = ctx.array((b, t, h), dtype, 1)
            lengths = np.random.default_rng(2).integers(1, t + 1, size=b)
            for case, host_mask in (
                ("all tokens", np.ones((b, t), dtype=np.int64)),
                ("padded", (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)),
            ):
                mask = ctx.put(host_mask)
                kept = int(host_mask.sum())
                item = nbytes_of(hidden) // (b * t * h)
                needed = kept * h * item + nbytes_of(mask) + b * h * 4
                note = f"{kept / (b * t):.0%} of tokens kept"
                fn = partial(kernels.masked_mean_pool_l2, hidden, mask)
                ours = [(case, kernels.resolve_provider(op, hidden, mask), fn)]
                vendor = [
                    (f"{case} vendor", vendor_name(ctx.device), partial(vendor_fn, hidden, mask))
                ]
                out += ctx.group(
                    op, (b, t, h), dtype, ours, vendor, nbytes=needed, copy_of=hidden, note=note
                )
    return out
