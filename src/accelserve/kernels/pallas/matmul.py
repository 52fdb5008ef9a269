"""Matrix multiplication in Pallas.

- blocked: grid (M/bm, N/bn, K/bk); each step multiplies an [bm, bk] and a [bk, bn] block on
  the MXU into a float32 VMEM accumulator; K is the innermost ("arbitrary") axis, and the
  output block is written once, at the last K step, after the optional bias + activation
  epilogue (used by ``linear``).
- naive / unrolled: the TPU's smallest unit of work is a whole vector-register tile, so "one
  output element per program" becomes one output tile per program with no K tiling and no MXU:
  K is walked one step at a time as rank-1 updates on the VPU; ``unrolled`` unrolls that loop
  by a compile-time factor.
- auto: blocked.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from accelserve.kernels.pallas._common import activate, dot_precision, live, params, vmem
from accelserve.kernels.pallas._tiles import (
    INTERPRET_MATMUL,
    TPU_MATMUL,
    MatmulTiles,
    fit,
)

UNROLL = 8


def _matmul_blocked_kernel(
    a_ref: Any,
    b_ref: Any,
    *refs: Any,
    k_total: int,
    block_k: int,
    has_bias: bool,
    activation: str | None,
) -> None:
    bias_ref, o_ref, acc_ref = refs if has_bias else (None, *refs)
    k = pl.program_id(2)

    @pl.when(k == 0)
    def _init() -> None:
        acc_ref[...] = jnp.zeros_like(acc_ref)

    a, b = a_ref[...], b_ref[...]
    if k_total % block_k:  # the last K block hangs over the edge: zero its tail
        a = jnp.where(live(a, 1, k * block_k, k_total), a, 0)
        b = jnp.where(live(b, 0, k * block_k, k_total), b, 0)
    acc_ref[...] += jnp.dot(
        a, b, preferred_element_type=jnp.float32, precision=dot_precision(a.dtype)
    )

    @pl.when(k == pl.num_programs(2) - 1)
    def _store() -> None:
        acc = acc_ref[...]
        if bias_ref is not None:
            acc += bias_ref[...].astype(jnp.float32)
        o_ref[...] = activate(acc, activation).astype(o_ref.dtype)


def _matmul_rank1_kernel(a_ref: Any, b_ref: Any, o_ref: Any, *, k_total: int, unroll: int) -> None:
    def step(p: Any, acc: jax.Array) -> jax.Array:
        a_col = a_ref[:, pl.ds(p, 1)].astype(jnp.float32)  # [bm, 1]
        b_row = b_ref[pl.ds(p, 1), :].astype(jnp.float32)  # [1, bn]
        return acc + a_col * b_row

    acc = jnp.zeros(o_ref.shape, jnp.float32)
    o_ref[...] = lax.fori_loop(0, k_total, step, acc, unroll=unroll).astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("activation", "interpret", "tiles"))
def blocked(
    a: jax.Array,
    b: jax.Array,
    bias: jax.Array | None = None,
    activation: str | None = None,
    *,
    interpret: bool = False,
    tiles: MatmulTiles | None = None,
) -> jax.Array:
    """The tiled MXU kernel with the optional fused epilogue; ``a`` is 2-d."""
    t = tiles or (INTERPRET_MATMUL if interpret else TPU_MATMUL)
    (m, k), n = a.shape, b.shape[1]
    bm, bn, bk = fit(t.block_m, m), fit(t.block_n, n), fit(t.block_k, k)
    in_specs = [
        pl.BlockSpec((bm, bk), lambda i, j, kk: (i, kk)),
        pl.BlockSpec((bk, bn), lambda i, j, kk: (kk, j)),
    ]
    operands = [a, b]
    if bias is not None:
        in_specs.append(pl.BlockSpec((1, bn), lambda i, j, kk: (0, j)))
        operands.append(bias.reshape(1, n))
    kernel = functools.partial(
        _matmul_blocked_kernel,
        k_total=k,
        block_k=bk,
        has_bias=bias is not None,
        activation=activation,
    )
    return pl.pallas_call(
        kernel,
        out_shape=jax.ShapeDtypeStruct((m, n), a.dtype),
        grid=(pl.cdiv(m, bm), pl.cdiv(n, bn), pl.cdiv(k, bk)),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((bm, bn), lambda i, j, kk: (i, j)),
        scratch_shapes=[vmem((bm, bn))],
        compiler_params=params("parallel", "parallel", "arbitrary"),
        interpret=interpret,
    )(*operands)


@functools.partial(jax.jit, static_argnames=("unroll", "interpret", "tiles"))
def rank1(
    a: jax.Array,
    b: jax.Array,
    unroll: int = 1,
    *,
    interpret: bool = False,
    tiles: MatmulTiles | None = None,
) -> jax.Array:
    t = tiles or (INTERPRET_MATMUL if interpret else TPU_MATMUL)
    (m, k), n = a.shape, b.shape[1]
    bm, bn = fit(t.block_m, m), fit(t.block_n, n)
    return pl.pallas_call(
        functools.partial(_matmul_rank1_kernel, k_total=k, unroll=unroll),
        out_shape=jax.ShapeDtypeStruct((m, n), a.dtype),
        grid=(pl.cdiv(m, bm), pl.cdiv(n, bn)),
        in_specs=[
            pl.BlockSpec((bm, k), lambda i, j: (i, 0)),
            pl.BlockSpec((k, bn), lambda i, j: (0, j)),
        ],
        out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
        compiler_params=params("parallel", "parallel"),
        interpret=interpret,
    )(a, b)


def matmul(
    a: jax.Array, b: jax.Array, algorithm: str = "auto", *, interpret: bool = False
) -> jax.Array:
    if algorithm == "naive":
        return rank1(a, b, 1, interpret=interpret)
    if algorithm == "unrolled":
        return rank1(a, b, UNROLL, interpret=interpret)
    return blocked(a, b, interpret=interpret)
