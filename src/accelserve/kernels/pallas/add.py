"""Broadcasting add in Pallas over the [R, C] view from ``_broadcast.plan_2d``.

A repeated operand keeps its small shape ([1, C], [R, 1] or [1, 1]) and its BlockSpec index
map pins the broadcast dimension to block 0, so it is never materialized; the kernel's own
broadcasting expands it inside VMEM. float32 math, one rounding on store.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from accelserve.kernels._broadcast import plan_2d
from accelserve.kernels.pallas._common import params
from accelserve.kernels.pallas._tiles import INTERPRET_ROWS, TPU_ROWS, fit


def _add_kernel(a_ref: Any, b_ref: Any, o_ref: Any) -> None:
    total = a_ref[...].astype(jnp.float32) + b_ref[...].astype(jnp.float32)
    o_ref[...] = total.astype(o_ref.dtype)


def _spec(full: tuple[bool, bool], br: int, bc: int) -> pl.BlockSpec:
    rows, cols = full
    return pl.BlockSpec(
        (br if rows else 1, bc if cols else 1),
        lambda i, j: (i if rows else 0, j if cols else 0),
    )


@functools.partial(jax.jit, static_argnames=("interpret",))
def add(a: jax.Array, b: jax.Array, *, interpret: bool = False) -> jax.Array:
    plan = plan_2d(a.shape, b.shape)
    if plan is None:  # more than two broadcast groups: materialize, then add flat
        shape = jnp.broadcast_shapes(a.shape, b.shape)
        a, b = jnp.broadcast_to(a, shape), jnp.broadcast_to(b, shape)
        plan = plan_2d(a.shape, b.shape)
        assert plan is not None
    t = INTERPRET_ROWS if interpret else TPU_ROWS
    br, bc = fit(t.block_rows, plan.rows), fit(t.block_cols, plan.cols)
    out = pl.pallas_call(
        _add_kernel,
        out_shape=jax.ShapeDtypeStruct((plan.rows, plan.cols), a.dtype),
        grid=(pl.cdiv(plan.rows, br), pl.cdiv(plan.cols, bc)),
        in_specs=[_spec(plan.a_full, br, bc), _spec(plan.b_full, br, bc)],
        out_specs=pl.BlockSpec((br, bc), lambda i, j: (i, j)),
        compiler_params=params("parallel", "parallel"),
        interpret=interpret,
    )(a.reshape(plan.operand_shape(plan.a_full)), b.reshape(plan.operand_shape(plan.b_full)))
    return out.reshape(plan.out_shape)
