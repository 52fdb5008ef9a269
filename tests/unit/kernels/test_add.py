"""add: broadcasting sums on every provider against the reference."""

from __future__ import annotations

import pytest

from accelserve.kernels.testing import assert_close, random_array, tolerance, with_specials

from .conftest import Runner, reference

# Same shapes, row/column/scalar broadcast, both sides broadcasting, and a >2-group pattern.
PAIRS = [
    ((1,), (1,)),
    ((7, 13), (7, 13)),
    ((17, 31), (31,)),
    ((17, 31), (17, 1)),
    ((5, 3), (1,)),
    ((1, 29), (23, 1)),
    ((3, 1, 5), (1, 7, 1)),
    ((2, 3, 4, 5), (3, 1, 5)),
    ((300,), (300,)),
]


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shapes", PAIRS, ids=str)
def test_matches_reference(run: Runner, shapes: tuple[tuple[int, ...], ...], dtype: str) -> None:
    a, b = random_array(shapes[0], dtype, seed=1), random_array(shapes[1], dtype, seed=2)
    got = run("add", a, b)
    assert got.dtype == a.dtype
    atol, rtol = tolerance(dtype)
    assert_close(got, reference("add", a, b), atol, rtol)


def test_nan_and_inf_propagate(run: Runner) -> None:
    a = with_specials(random_array((9, 11), "float32", seed=3))
    b = with_specials(random_array((11,), "float32", seed=4), seed=5)
    assert_close(run("add", a, b), reference("add", a, b), 1e-6, 1e-6)


def test_large_parallel_path(run: Runner, provider: str) -> None:
    # Big enough for the cpu provider's parallel numba kernel (the interpreter stays small).
    rows = 8 if provider == "triton" else 300
    a, b = random_array((rows, 1000), "float32", seed=6), random_array((1000,), "float32", seed=7)
    assert_close(run("add", a, b), reference("add", a, b), 1e-6, 1e-6)
