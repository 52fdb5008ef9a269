"""L2 normalization in Pallas.

Rows that fit a VMEM block ([br, C] with br * C * 4 bytes <= 2 MiB) are read once: the block's
sum of squares and the scaling happen on the same VMEM copy. Longer rows take two kernels: the
row reduction (squares) into [R, 1] norms, then a tiled scaling pass. A normalized axis that
is not innermost is moved there first (an XLA transpose). Math in float32; NaN norms propagate.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from accelserve.kernels.pallas._common import denominator, params
from accelserve.kernels.pallas._tiles import (
    INTERPRET_ROWS,
    SUBLANES,
    TPU_ROWS,
    VMEM_BLOCK_BYTES,
    fit,
)
from accelserve.kernels.pallas.reduce import reduce_rows


def _l2_normalize_rows_kernel(x_ref: Any, o_ref: Any, *, eps: float) -> None:
    x = x_ref[...].astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
    o_ref[...] = (x * (1.0 / denominator(norm, eps))).astype(o_ref.dtype)


def _scale_kernel(x_ref: Any, s_ref: Any, o_ref: Any, *, eps: float) -> None:
    inv = 1.0 / denominator(jnp.sqrt(s_ref[...]), eps)
    o_ref[...] = (x_ref[...].astype(jnp.float32) * inv).astype(o_ref.dtype)


def _rows(x: jax.Array, eps: float, interpret: bool) -> jax.Array:
    t = INTERPRET_ROWS if interpret else TPU_ROWS
    rows, n = x.shape
    out_shape = jax.ShapeDtypeStruct((rows, n), x.dtype)
    fits = rows * n * 4 <= VMEM_BLOCK_BYTES or n * 4 * SUBLANES <= VMEM_BLOCK_BYTES
    if fits:
        br = max(SUBLANES, VMEM_BLOCK_BYTES // (n * 4) // SUBLANES * SUBLANES)
        br = fit(min(br, t.block_rows), rows)
        return pl.pallas_call(
            functools.partial(_l2_normalize_rows_kernel, eps=eps),
            out_shape=out_shape,
            grid=(pl.cdiv(rows, br),),
            in_specs=[pl.BlockSpec((br, n), lambda i: (i, 0))],
            out_specs=pl.BlockSpec((br, n), lambda i: (i, 0)),
            compiler_params=params("parallel"),
            interpret=interpret,
        )(x)
    sumsq = reduce_rows(x, jnp.float32, square=True, interpret=interpret)  # [R, 1]
    br, bc = fit(t.block_rows, rows), fit(t.block_cols, n)
    return pl.pallas_call(
        functools.partial(_scale_kernel, eps=eps),
        out_shape=out_shape,
        grid=(pl.cdiv(rows, br), pl.cdiv(n, bc)),
        in_specs=[
            pl.BlockSpec((br, bc), lambda i, j: (i, j)),
            pl.BlockSpec((br, 1), lambda i, j: (i, 0)),
        ],
        out_specs=pl.BlockSpec((br, bc), lambda i, j: (i, j)),
        compiler_params=params("parallel", "parallel"),
        interpret=interpret,
    )(x, sumsq)


@functools.partial(jax.jit, static_argnames=("axis", "eps", "interpret"))
def l2_normalize(
    x: jax.Array, axis: int = -1, eps: float = 1e-12, *, interpret: bool = False
) -> jax.Array:
    moved = jnp.moveaxis(x, axis, -1)
    rows = moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])
    out = _rows(rows, eps, interpret).reshape(moved.shape)
    return jnp.moveaxis(out, -1, axis)
