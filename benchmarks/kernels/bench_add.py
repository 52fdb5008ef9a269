"""Broadcasting add against the vendor's add (memory-bound: GB/s against measured copy)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from accelserve import kernels
from benchmarks.kernels._common import Context, Measurement, nbytes_of, vendor_name

CASES = {
    "cpu": [((4096, 1024), (1024,)), ((4096, 1024), (4096, 1024))],
    "cuda": [((8192, 8192), (8192,)), ((8192, 8192), (8192, 8192))],
    "tpu": [((8192, 8192), (8192,)), ((8192, 8192), (8192, 8192))],
    "tiny": [((64, 32), (32,))],
}
DTYPE = {"cpu": "float32", "cuda": "bfloat16", "tpu": "bfloat16", "tiny": "float32"}


def _vendor(ctx: Context) -> Callable[[Any, Any], Any]:
    if ctx.device == "cuda":
        import torch

        return torch.add
    if ctx.device == "tpu":
        import jax
        import jax.numpy as jnp

        return jax.jit(jnp.add)
    import numpy as np

    return np.add


def run(ctx: Context) -> list[Measurement]:
    vendor_fn = _vendor(ctx)
    dtype = DTYPE[ctx.key]
    out: list[Measurement] = []
    for sa, sb in CASES[ctx.key]:
        a, b = ctx.array(sa, dtype, 1), ctx.array(sb, dtype, 2)
        moved = 2 * nbytes_of(a) + nbytes_of(b)  # read a and b, write an a-sized output
        case = "row broadcast" if len(sb) == 1 else "same shape"
        provider = kernels.resolve_provider("add", a, b)
        ours = [(case, provider, partial(kernels.add, a, b))]
        vendor = [(f"{case} vendor", vendor_name(ctx.device), partial(vendor_fn, a, b))]
        out += ctx.group("add", sa, dtype, ours, vendor, nbytes=moved, copy_of=a)
    return out
