"""Fused linear (x @ w + b, activation) against the vendor's unfused matmul + bias + act."""

from __future__ import annotations

from functools import partial
from typing import Any

from accelserve import kernels
from benchmarks.kernels._common import Context, Measurement

SHAPES = {
    "cpu": [(256, 384, 1536), (4096, 1024, 1024)],
    # serving shapes: batch 1-64 through 384- to 4096-wide layers
    "cuda": [
        (8192, 4096, 4096),
        (256, 384, 1536),
        (1, 384, 384),
        (16, 1024, 1024),
        (64, 4096, 4096),
    ],
    "tpu": [(8192, 4096, 4096)],
    "tiny": [(8, 32, 64)],
}
DTYPE = {"cpu": "float32", "cuda": "bfloat16", "tpu": "bfloat16", "tiny": "float32"}


def _vendors(ctx: Context, activation: str) -> dict[str, Any]:
    """The vendor's unfused layer: matmul, then bias add, then the activation."""
    if ctx.device == "cpu":
        import numpy as np

        out: dict[str, Any] = {}
        if activation == "silu":

            def numpy_layer(x: Any, w: Any, b: Any) -> Any:
                y = x @ w + b
                return y * (1.0 / (1.0 + np.exp(-y)))

            out["numpy"] = numpy_layer
        try:  # NumPy has no erf: torch's CPU ops are the vendor path for gelu
            import torch
            import torch.nn.functional as F

            act = F.gelu if activation == "gelu" else F.silu

            def torch_layer(x: Any, w: Any, b: Any) -> Any:
                t = torch.from_numpy
                return act(t(x) @ t(w) + t(b))

            out["torch-cpu"] = torch_layer
        except ImportError:
            pass
        return out
    if ctx.device == "cuda":
        import torch.nn.functional as F

        act = F.gelu if activation == "gelu" else F.silu
        return {"torch": lambda x, w, b: act(x @ w + b)}
    import jax
    import jax.numpy as jnp

    def jnp_layer(x: Any, w: Any, b: Any) -> Any:
        y = jnp.matmul(x, w) + b
        return jax.nn.gelu(y, approximate=False) if activation == "gelu" else jax.nn.silu(y)

    return {"jnp": jax.jit(jnp_layer)}


def run(ctx: Context) -> list[Measurement]:
    out: list[Measurement] = []
    dtype = DTYPE[ctx.key]
    for m, k, n in SHAPES[ctx.key][:1] if ctx.quick else SHAPES[ctx.key]:
        x, w = ctx.array((m, k), dtype, 1), ctx.array((k, n), dtype, 2, scale=0.05)
        b = ctx.array((n,), dtype, 3)
        for activation in ("gelu", "silu"):
            vendors = [
                (f"{activation} vendor", name, partial(fn, x, w, b))
                for name, fn in _vendors(ctx, activation).items()
            ]
            provider = kernels.resolve_provider("linear", x, w, b)
            ours = [(activation, provider, partial(kernels.linear, x, w, b, activation))]
            out += ctx.group("linear", (m, k, n), dtype, ours, vendors, flops=2.0 * m * n * k)
    return out
