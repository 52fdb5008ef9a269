"""reduce_sum / reduce_mean: full, row-wise and column-wise on every provider."""

from __future__ import annotations

import pytest

from accelserve.kernels.testing import assert_close, random_array, tolerance, with_specials

from .conftest import Runner, reference

SHAPES = [(1,), (1, 1), (7,), (13, 5), (3, 257), (129, 2), (4, 6, 5)]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean"])
def test_every_axis(run: Runner, op: str, shape: tuple[int, ...], dtype: str) -> None:
    x = random_array(shape, dtype, seed=1)
    atol, rtol = tolerance(dtype)
    for axis in (None, *range(len(shape))):
        got = run(op, x, axis=axis)
        assert got.dtype == x.dtype
        assert_close(got, reference(op, x, axis=axis), atol, rtol, name=f"{op} axis={axis}")


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean"])
def test_long_rows_split_into_blocks(run: Runner, op: str) -> None:
    # Few long rows take the two-stage path (partials per block, then partials reduced).
    x = random_array((2, 40000), "float32", seed=2)
    for axis in (None, 1, -1):
        assert_close(run(op, x, axis=axis), reference(op, x, axis=axis), 1e-3, 1e-4)


def test_16bit_accumulates_in_float32(run: Runner) -> None:
    # 4096 ones in bf16: a bf16 accumulator would stall at 256; float32 gets the exact count.
    import numpy as np

    x = np.ones((4096,), dtype=random_array((1,), "bfloat16").dtype)
    assert float(run("reduce_sum", x)) == 4096.0


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_nan_and_inf_propagate(run: Runner, axis: int | None) -> None:
    x = with_specials(random_array((6, 7), "float32", seed=3))
    assert_close(run("reduce_sum", x, axis=axis), reference("reduce_sum", x, axis=axis), 1e-4, 1e-4)
