"""Small helpers shared by the Pallas kernels."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental.pallas import tpu as pltpu


def params(*semantics: Any) -> Any:
    """TPU compiler params: which grid axes are parallel and which carry an accumulator."""
    return pltpu.CompilerParams(dimension_semantics=semantics)


def vmem(shape: tuple[int, ...]) -> Any:
    return pltpu.VMEM(shape, jnp.float32)


def live(x: jax.Array, axis: int, start: jax.Array | int, limit: int) -> jax.Array:
    """True where the block element's global index along ``axis`` is < ``limit``; blocks that
    hang over an array's edge hold unspecified values there."""
    return start + lax.broadcasted_iota(jnp.int32, x.shape, axis) < limit


def denominator(norm: jax.Array, eps: float) -> jax.Array:
    """max(norm, eps) that keeps NaN, as the reference does."""
    return jnp.where((norm > eps) | jnp.isnan(norm), norm, eps)


def activate(x: jax.Array, activation: str | None) -> jax.Array:
    if activation == "relu":
        return jnp.where(x < 0, 0.0, x)
    if activation == "gelu":
        return 0.5 * x * (1.0 + lax.erf(x * (1.0 / math.sqrt(2.0))))
    if activation == "silu":
        return x * lax.logistic(x)
    return x


def dot_precision(dtype: Any) -> Any:
    """float32 inputs ask for full precision (the MXU's default passes are bf16)."""
    return lax.Precision.HIGHEST if dtype == jnp.float32 else lax.Precision.DEFAULT
