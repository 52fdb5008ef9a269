"""Fused sentence-embedding head in Pallas.

Grid (B/bb, T/bt): each step adds the unmasked token rows of a [bb, bt, H] hidden block into a
float32 VMEM accumulator (tokens are the innermost, "arbitrary", axis) and counts them; the
last step divides, L2-normalizes the [bb, H] rows and writes them once. Masked tokens are
selected away (never multiplied), so NaN padding cannot leak in.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from accelserve.kernels.pallas._common import denominator, live, params, vmem
from accelserve.kernels.pallas._tiles import INTERPRET_POOL, TPU_POOL, PoolTiles, fit


def _masked_mean_pool_l2_kernel(
    h_ref: Any, keep_ref: Any, o_ref: Any, acc_ref: Any, count_ref: Any,
    *, tokens: int, block_t: int, eps: float,
) -> None:  # fmt: skip
    t = pl.program_id(1)

    @pl.when(t == 0)
    def _init() -> None:
        acc_ref[...] = jnp.zeros_like(acc_ref)
        count_ref[...] = jnp.zeros_like(count_ref)

    keep = keep_ref[...][:, 0, :] != 0  # [bb, bt]
    if tokens % block_t:
        keep = keep & live(keep, 1, t * block_t, tokens)
    h = h_ref[...].astype(jnp.float32)  # [bb, bt, H]
    acc_ref[...] += jnp.sum(jnp.where(keep[:, :, None], h, 0.0), axis=1)
    count_ref[...] += jnp.sum(keep.astype(jnp.float32), axis=1, keepdims=True)

    @pl.when(t == pl.num_programs(1) - 1)
    def _store() -> None:
        mean = acc_ref[...] / jnp.maximum(count_ref[...], 1.0)
        norm = jnp.sqrt(jnp.sum(mean * mean, axis=1, keepdims=True))
        o_ref[...] = mean * (1.0 / denominator(norm, eps))


@functools.partial(jax.jit, static_argnames=("eps", "interpret", "tiles"))
def masked_mean_pool_l2(
    hidden: jax.Array,
    mask: jax.Array,
    eps: float = 1e-12,
    *,
    interpret: bool = False,
    tiles: PoolTiles | None = None,
) -> jax.Array:
    t = tiles or (INTERPRET_POOL if interpret else TPU_POOL)
    batch, tokens, width = hidden.shape
    bb, bt = fit(t.block_b, batch), fit(t.block_t, tokens)
    keep = (mask != 0).astype(jnp.int32).reshape(batch, 1, tokens)  # [B, 1, T]: legal blocks
    kernel = functools.partial(_masked_mean_pool_l2_kernel, tokens=tokens, block_t=bt, eps=eps)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((batch, width), jnp.float32),
        grid=(pl.cdiv(batch, bb), pl.cdiv(tokens, bt)),
        in_specs=[
            pl.BlockSpec((bb, bt, width), lambda i, j: (i, j, 0)),
            pl.BlockSpec((bb, 1, bt), lambda i, j: (i, 0, j)),
        ],
        out_specs=pl.BlockSpec((bb, width), lambda i, j: (i, 0)),
        scratch_shapes=[vmem((bb, width)), vmem((bb, 1))],
        compiler_params=params("parallel", "arbitrary"),
        interpret=interpret,
    )(hidden, keep)
