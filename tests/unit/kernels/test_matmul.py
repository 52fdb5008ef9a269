"""matmul: every provider and algorithm against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.kernels.testing import assert_close, random_array, tolerance, with_specials

from .conftest import Runner, reference

# 1x1, primes, non-powers of two, tall/skinny, wide, and one that spans several tiles.
SHAPES = [(1, 1, 1), (7, 13, 5), (17, 3, 29), (61, 5, 2), (2, 70, 3), (37, 150, 41)]
SMALL = [(1, 1, 1), (5, 11, 3), (3, 17, 9)]  # naive/unrolled: one interpreted program per output
DTYPES = ["float32", "float16", "bfloat16"]


def _check(run: Runner, shape: tuple[int, int, int], dtype: str, algorithm: str) -> None:
    m, k, n = shape
    a, b = random_array((m, k), dtype, seed=1), random_array((k, n), dtype, seed=2)
    got = run("matmul", a, b, algorithm=algorithm)
    assert got.dtype == a.dtype
    atol, rtol = tolerance(dtype)
    assert_close(got, reference("matmul", a, b), atol, rtol, name=f"matmul/{algorithm}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_blocked_and_auto(run: Runner, shape: tuple[int, int, int], dtype: str) -> None:
    for algorithm in ("blocked", "auto"):
        _check(run, shape, dtype, algorithm)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["naive", "unrolled"])
@pytest.mark.parametrize("shape", SMALL, ids=str)
def test_naive_and_unrolled(
    run: Runner, shape: tuple[int, int, int], algorithm: str, dtype: str
) -> None:
    _check(run, shape, dtype, algorithm)


@pytest.mark.parametrize("algorithm", ["naive", "unrolled", "blocked", "auto"])
def test_nan_and_inf_propagate(run: Runner, algorithm: str) -> None:
    a = with_specials(random_array((6, 9), "float32", seed=3))
    b = random_array((9, 4), "float32", seed=4)
    assert_close(run("matmul", a, b, algorithm=algorithm), reference("matmul", a, b), 1e-4, 1e-4)


def test_non_contiguous_inputs(run: Runner) -> None:
    a = random_array((40, 24), "float32", seed=5).T  # a transposed view
    b = random_array((50, 40), "float32", seed=6)[::2, ::3]  # a strided view
    assert not a.flags.c_contiguous and not b.flags.c_contiguous
    got = run("matmul", a[:, :25], b)
    assert_close(got, reference("matmul", a[:, :25], b), 1e-4, 1e-4)


@pytest.mark.parametrize("algorithm", ["naive", "unrolled", "blocked"])
def test_reference_algorithms_agree(algorithm: str) -> None:
    a, b = random_array((19, 23), "float64", seed=7), random_array((23, 33), "float64", seed=8)
    got = reference("matmul", a, b, algorithm=algorithm)
    assert_close(got, a @ b, 1e-12, 1e-12, name=f"reference {algorithm}")


def test_float64_on_cpu() -> None:
    from accelserve import kernels

    a, b = random_array((9, 31), "float64", seed=9), random_array((31, 4), "float64", seed=10)
    for algorithm in ("naive", "unrolled", "blocked", "auto"):
        got = kernels.matmul(a, b, algorithm=algorithm, provider="cpu")
        assert got.dtype == np.float64
        assert_close(got, a @ b, 1e-12, 1e-12, name=algorithm)
