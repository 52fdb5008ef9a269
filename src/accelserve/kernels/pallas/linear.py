"""Fused linear layer in Pallas: the blocked MXU kernel with bias + activation applied to the
float32 VMEM accumulator at the last K step, before the single store."""

from __future__ import annotations

import jax

from accelserve.kernels.pallas.matmul import blocked


def linear(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    activation: str | None = None,
    *,
    interpret: bool = False,
) -> jax.Array:
    k, n = w.shape
    y = blocked(x.reshape(-1, k), w, b, activation, interpret=interpret)
    return y.reshape(*x.shape[:-1], n)
