"""matmul: every algorithm against the vendor GEMM (NumPy/BLAS, torch/cuBLAS, jnp/XLA)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from accelserve import kernels
from benchmarks.kernels._common import Context, Measurement, vendor_name

SHAPES = {
    "cpu": [(1024, 1024, 1024), (4096, 1024, 1024), (256, 384, 1536), (32, 384, 384)],
    "cuda": [(4096, 4096, 4096), (8192, 8192, 8192), (256, 384, 1536)],
    "tpu": [(4096, 4096, 4096), (8192, 8192, 8192)],
}
DTYPES = {"cpu": ["float32"], "cuda": ["bfloat16", "float16"], "tpu": ["bfloat16"]}
# The algorithm ladder runs at a size where even the naive kernel finishes quickly.
LADDER = {"cpu": (256, 256, 256), "cuda": (1024, 1024, 1024), "tpu": (1024, 1024, 1024)}


def _vendor(ctx: Context) -> Callable[[Any, Any], Any]:
    if ctx.device == "cuda":
        import torch

        return torch.matmul
    if ctx.device == "tpu":
        import jax
        import jax.numpy as jnp

        return jax.jit(jnp.matmul)
    import numpy as np

    return np.matmul


def _compare(
    ctx: Context, shape: tuple[int, int, int], dtype: str, algorithms: list[str], label: str
) -> list[Measurement]:
    m, k, n = shape
    a, b = ctx.array((m, k), dtype, 1), ctx.array((k, n), dtype, 2)
    ours = [(f"{label}{alg}", alg, partial(kernels.matmul, a, b, alg)) for alg in algorithms]
    vendor = [(f"{label}vendor", vendor_name(ctx.device), partial(_vendor(ctx), a, b))]
    return ctx.group("matmul", shape, dtype, ours, vendor, flops=2.0 * m * n * k)


def run(ctx: Context) -> list[Measurement]:
    out: list[Measurement] = []
    algorithms = ["auto"] if ctx.device == "cpu" else ["blocked", "auto"]
    for dtype in DTYPES[ctx.device]:
        shapes = SHAPES[ctx.device][:2] if ctx.quick else SHAPES[ctx.device]
        for shape in shapes:
            out += _compare(ctx, shape, dtype, algorithms, "")
        ladder = ["naive", "unrolled", "blocked", "auto"]
        out += _compare(ctx, LADDER[ctx.device], dtype, ladder, "ladder ")
    return out
