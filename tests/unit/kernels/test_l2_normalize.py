"""l2_normalize on every provider against the reference, every axis."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve import kernels
from accelserve.kernels.testing import assert_close, random_array, tolerance, with_specials

from .conftest import Runner, reference

SHAPES = [(1,), (1, 1), (7, 13), (3, 384), (129, 3), (2, 3, 5)]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_every_axis(run: Runner, shape: tuple[int, ...], dtype: str) -> None:
    x = random_array(shape, dtype, seed=1)
    atol, rtol = tolerance(dtype)
    for axis in range(-1, len(shape)):
        got = run("l2_normalize", x, axis=axis)
        assert got.dtype == x.dtype
        assert_close(got, reference("l2_normalize", x, axis=axis), atol, rtol, name=f"axis={axis}")


def test_long_rows(run: Runner) -> None:
    x = random_array((3, 20000), "float32", seed=2)
    assert_close(run("l2_normalize", x), reference("l2_normalize", x), 1e-6, 1e-4)


def test_zero_rows_stay_zero_and_eps_applies(run: Runner) -> None:
    x = random_array((4, 9), "float32", seed=3) * np.float32(1e-3)
    x[1] = 0.0
    for eps in (1e-12, 1.0):  # eps=1 is larger than every norm: plain division by eps
        got = run("l2_normalize", x, eps=eps)
        assert_close(got, reference("l2_normalize", x, eps=eps), 1e-6, 1e-5, name=f"eps={eps}")
    assert not run("l2_normalize", x)[1].any()


@pytest.mark.parametrize("axis", [0, 1])
def test_nan_and_inf_propagate(run: Runner, axis: int) -> None:
    x = with_specials(random_array((5, 6), "float32", seed=4))
    assert_close(
        run("l2_normalize", x, axis=axis), reference("l2_normalize", x, axis=axis), 1e-5, 1e-5
    )


def test_float64_on_cpu() -> None:
    x = random_array((11, 17), "float64", seed=5)
    got = kernels.l2_normalize(x, provider="cpu")
    assert got.dtype == np.float64
    assert_close(got, x / np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, 1e-12)
