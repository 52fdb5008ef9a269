"""l2_normalize against the vendor's expression x / max(||x||, eps) (read + write bytes)."""

from __future__ import annotations

from functools import partial
from typing import Any

from accelserve import kernels
from benchmarks.kernels._common import (
    Context,
    Measurement,
    nbytes_of,
    vendor_name,
)

SHAPES = {
    "cpu": [(4096, 1024), (16384, 1024), (64, 384)],
    "cuda": [(4096, 4096), (4096, 8192)],
    "tpu": [(4096, 4096), (4096, 8192)],
    "tiny": [(64, 32)],
}
DTYPES = {
    "cpu": ["float32"],
    "cuda": ["float32", "bfloat16"],
    "tpu": ["float32", "bfloat16"],
    "tiny": ["float32"],
}
EPS = 1e-12


def _vendor(ctx: Context) -> Any:
    if ctx.device == "cuda":
        import torch.nn.functional as F

        return partial(F.normalize, dim=-1, eps=EPS)
    if ctx.device == "tpu":
        import jax
        import jax.numpy as jnp

        return jax.jit(lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), EPS))
    import numpy as np

    return lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def run(ctx: Context) -> list[Measurement]:
    vendor_fn = _vendor(ctx)
    out: list[Measurement] = []
    for dtype in DTYPES[ctx.key]:
        for shape in SHAPES[ctx.key][:1] if ctx.quick else SHAPES[ctx.key]:
            x = ctx.array(shape, dtype, 1)
            fn = partial(kernels.l2_normalize, x)
            ours = [("rows", kernels.resolve_provider("l2_normalize", x), fn)]
            vendor = [("rows vendor", vendor_name(ctx.device), partial(vendor_fn, x))]
            out += ctx.group(
                "l2_normalize", shape, dtype, ours, vendor, nbytes=2 * nbytes_of(x), copy_of=x
            )
    return out
