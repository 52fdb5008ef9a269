"""linear: fused x @ w + b with activations on every provider against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.kernels.testing import assert_close, random_array, tolerance, with_specials

from .conftest import Runner, reference

# x shape, N: a single vector, 1x1, primes, a batch with leading dims, tall/skinny.
CASES = [((1,), 1), ((1, 1), 1), ((7, 13), 5), ((2, 3, 17), 19), ((65, 4), 3), ((3, 40), 70)]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "silu"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(
    run: Runner, case: tuple[tuple[int, ...], int], activation: str | None, dtype: str
) -> None:
    x_shape, n = case
    k = x_shape[-1]
    x = random_array(x_shape, dtype, seed=1)
    w = random_array((k, n), dtype, seed=2, scale=0.5)
    b = random_array((n,), dtype, seed=3)
    got = run("linear", x, w, b, activation=activation)
    assert got.shape == (*x_shape[:-1], n) and got.dtype == x.dtype
    atol, rtol = tolerance(dtype)
    assert_close(got, reference("linear", x, w, b, activation=activation), atol, rtol)


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_without_bias(run: Runner, activation: str | None) -> None:
    x, w = random_array((9, 10), "float32", seed=4), random_array((10, 6), "float32", seed=5)
    got = run("linear", x, w, activation=activation)
    assert_close(got, reference("linear", x, w, activation=activation), 1e-4, 1e-4)


@pytest.mark.parametrize("activation", [None, "relu", "gelu", "silu"])
def test_nan_and_inf_propagate(run: Runner, activation: str) -> None:
    x = with_specials(random_array((5, 8), "float32", seed=6))
    w = random_array((8, 7), "float32", seed=7)
    b = np.array([0, np.inf, -np.inf, 0, 0, 1, 2], dtype=np.float32)
    got = run("linear", x, w, b, activation=activation)
    assert_close(got, reference("linear", x, w, b, activation=activation), 1e-4, 1e-4)
