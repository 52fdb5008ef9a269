"""Blockwise sum and mean in Pallas, float32 accumulation.

The row kernel reduces an [R, C] view: grid (R/br, C/bc), the column blocks on the innermost
("arbitrary") axis add into a float32 VMEM accumulator, written once at the last step. A full
reduction runs it twice: every row of the input reduces to a float32 partial, then the
partials, seen as one row, reduce to the result. A reduced axis that is not innermost is
moved there first (an XLA transpose).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from accelserve.kernels.pallas._common import live, params, vmem
from accelserve.kernels.pallas._tiles import INTERPRET_ROWS, TPU_ROWS, RowTiles, fit


def _reduce_rows_kernel(
    x_ref: Any, o_ref: Any, acc_ref: Any, *, n: int, block_cols: int, square: bool, scale: float
) -> None:
    j = pl.program_id(1)

    @pl.when(j == 0)
    def _init() -> None:
        acc_ref[...] = jnp.zeros_like(acc_ref)

    x = x_ref[...].astype(jnp.float32)
    if square:
        x = x * x
    if n % block_cols:
        x = jnp.where(live(x, 1, j * block_cols, n), x, 0.0)
    acc_ref[...] += jnp.sum(x, axis=1, keepdims=True)

    @pl.when(j == pl.num_programs(1) - 1)
    def _store() -> None:
        o_ref[...] = (acc_ref[...] * scale).astype(o_ref.dtype)


def reduce_rows(
    x: jax.Array,
    out_dtype: Any,
    *,
    scale: float = 1.0,
    square: bool = False,
    interpret: bool = False,
    tiles: RowTiles | None = None,
) -> jax.Array:
    """``scale * sum(x[r, :] (squared if asked))`` for each row of 2-d ``x``: shape [R, 1]."""
    t = tiles or (INTERPRET_ROWS if interpret else TPU_ROWS)
    rows, n = x.shape
    br, bc = fit(t.block_rows, rows), fit(t.block_cols, n)
    kernel = functools.partial(_reduce_rows_kernel, n=n, block_cols=bc, square=square, scale=scale)
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((rows, 1), out_dtype),
        grid=(pl.cdiv(rows, br), pl.cdiv(n, bc)),
        in_specs=[pl.BlockSpec((br, bc), lambda i, j: (i, j))],
        out_specs=pl.BlockSpec((br, 1), lambda i, j: (i, 0)),
        scratch_shapes=[vmem((br, 1))],
        compiler_params=params("parallel", "arbitrary"),
        interpret=interpret,
    )(x)


@functools.partial(jax.jit, static_argnames=("axis", "mean", "interpret"))
def _reduce(x: jax.Array, axis: int | None, mean: bool, interpret: bool) -> jax.Array:
    if axis is None:
        rows = x.reshape(-1, x.shape[-1]) if x.ndim else x.reshape(1, 1)
        partials = reduce_rows(rows, jnp.float32, interpret=interpret)  # [R, 1]
        scale = 1.0 / x.size if mean else 1.0
        total = reduce_rows(partials.reshape(1, -1), x.dtype, scale=scale, interpret=interpret)
        return total.reshape(())
    moved = jnp.moveaxis(x, axis, -1)
    n = moved.shape[-1]
    out_shape = moved.shape[:-1]
    rows = moved.reshape(math.prod(out_shape), n)
    total = reduce_rows(rows, x.dtype, scale=1.0 / n if mean else 1.0, interpret=interpret)
    return total.reshape(out_shape)


def reduce_sum(x: jax.Array, axis: int | None = None, *, interpret: bool = False) -> jax.Array:
    return _reduce(x, axis, False, interpret)


def reduce_mean(x: jax.Array, axis: int | None = None, *, interpret: bool = False) -> jax.Array:
    return _reduce(x, axis, True, interpret)
