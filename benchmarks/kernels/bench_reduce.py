"""reduce_sum / reduce_mean (rows, columns, full) against the vendor's sum / mean.

Bytes counted are the bytes read; the ceiling is the measured copy bandwidth (read + write),
so a read-only reduction can exceed 100% of it.
"""

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
    "cpu": [(4096, 1024), (16384, 1024)],
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


def _vendor(ctx: Context, op: str, axis: int | None) -> Any:
    if ctx.device == "cuda":
        import torch

        fn = torch.sum if op == "reduce_sum" else torch.mean
        return partial(fn, dtype=torch.float32) if axis is None else partial(fn, dim=axis)
    if ctx.device == "tpu":
        import jax
        import jax.numpy as jnp

        jfn = jnp.sum if op == "reduce_sum" else jnp.mean
        return jax.jit(partial(jfn, axis=axis))
    import numpy as np

    nfn = np.sum if op == "reduce_sum" else np.mean
    return partial(nfn, axis=axis)


def run(ctx: Context) -> list[Measurement]:
    out: list[Measurement] = []
    for dtype in DTYPES[ctx.key]:
        for si, shape in enumerate(SHAPES[ctx.key][:1] if ctx.quick else SHAPES[ctx.key]):
            x = ctx.array(shape, dtype, 1)
            read = nbytes_of(x)
            cases: list[tuple[str, int | None, str]] = [
                ("reduce_sum", -1, "rows"),
                ("reduce_mean", -1, "rows"),
            ]
            if si == 0:
                cases += [("reduce_sum", None, "full"), ("reduce_sum", 0, "columns")]
            for op, axis, case in cases:
                fn = partial(getattr(kernels, op), x, axis=axis)
                ours = [(case, kernels.resolve_provider(op, x), fn)]
                vendor = [
                    (f"{case} vendor", vendor_name(ctx.device), partial(_vendor(ctx, op, axis), x))
                ]
                out += ctx.group(op, shape, dtype, ours, vendor, nbytes=read, copy_of=x)
    return out
