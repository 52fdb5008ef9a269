"""matmul: every algorithm against the vendor GEMM (NumPy/BLAS, torch/cuBLAS, jnp/XLA)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from accelserve import kernels
from benchmarks.kernels._common import Context, Measurement, vendor_name

SHAPES = {
    "cpu": [(1024, 1024, 1024), (4096, 1024, 1024), (256, 384, 1536), (32, 384, 384)],
    # the two GEMM targets, then serving shapes: batch 1-64 against 384x384 .. 4096x4096
    "cuda": [
        (4096, 4096, 4096), (8192, 8192, 8192), (256, 384, 1536),
        (1, 384, 384), (64, 384, 384), (16, 1024, 1024), (1, 4096, 4096), (64, 4096, 4096),
    ],
    "tpu": [(4096, 4096, 4096), (8192, 8192, 8192)],
    "tiny": [(8, 32, 16)],
}  # fmt: skip
# float32 on CUDA runs with TF32 allowed on both sides (torch.backends.cuda.matmul.allow_tf32)
DTYPES = {
    "cpu": ["float32"],
    "cuda": ["bfloat16", "float16", "float32"],
    "tpu": ["bfloat16"],
    "tiny": ["float32"],
}
# The algorithm ladder runs at a size where even the naive kernel finishes quickly.
LADDER = {
    "cpu": (256, 256, 256),
    "cuda": (1024, 1024, 1024),
    "tpu": (1024, 1024, 1024),
    "tiny": (16, 16, 16),
}


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
    note = "TF32" if ctx.device == "cuda" and dtype == "float32" else ""
    return ctx.group("matmul", shape, dtype, ours, vendor, flops=2.0 * m * n * k, note=note)


def run(ctx: Context) -> list[Measurement]:
    out: list[Measurement] = []
    if ctx.device == "cuda":  # FP32 as served: TF32 tensor cores for cuBLAS and for ours
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
    algorithms = ["auto"] if ctx.device == "cpu" else ["blocked", "auto"]
    for dtype in DTYPES[ctx.key]:
        shapes = SHAPES[ctx.key][:2] if ctx.quick else SHAPES[ctx.key]
        for shape in shapes:
            out += _compare(ctx, shape, dtype, algorithms, "")
        ladder = ["naive", "unrolled", "blocked", "auto"]
        out += _compare(ctx, LADDER[ctx.key], dtype, ladder, "ladder ")
    return out
