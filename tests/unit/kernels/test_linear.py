"""linear: fused x @ w + b with activations on every provider against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve import kernels
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


# A Fortran-ordered w (the native backend's layout on CPU) takes the cpu provider's small-batch
# kernel for 2 to 128 rows: row counts around its 4-row tiles and past its limit, N = 70 around
# its 4-column tiles and 32-column blocks.
@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 13, 128, 129])
def test_fortran_ordered_weights_on_cpu(rows: int, dtype: str) -> None:
    pytest.importorskip("numba")
    x = random_array((rows, 37), dtype, seed=8)
    w = np.asfortranarray(random_array((37, 70), dtype, seed=9, scale=0.5))
    b = random_array((70,), dtype, seed=10)
    got = kernels.linear(x, w, b, activation="gelu", provider="cpu")
    assert got.shape == (rows, 70) and got.dtype == x.dtype
    assert_close(got, reference("linear", x, w, b, activation="gelu"), *tolerance(dtype))


def test_fortran_ordered_weights_propagate_nan_and_inf() -> None:
    pytest.importorskip("numba")
    x = with_specials(random_array((6, 8), "float32", seed=11))
    w = np.asfortranarray(random_array((8, 7), "float32", seed=12))
    got = kernels.linear(x, w, provider="cpu")
    assert_close(got, reference("linear", x, w), 1e-4, 1e-4)


def _chain_layers() -> list:
    widths, activations = (9, 33, 8, 17, 5), ("gelu", None, "relu", "silu")
    layers = []
    for i, activation in enumerate(activations):
        w = random_array((widths[i], widths[i + 1]), "float32", seed=20 + i, scale=0.5)
        b = None if i == 1 else random_array((widths[i + 1],), "float32", seed=30 + i)
        layers.append((np.asfortranarray(w) if i % 2 else w, b, activation))
    return layers


def _layer_by_layer(x: np.ndarray, layers: list) -> np.ndarray:
    for w, b, activation in layers:
        x = reference("linear", x, w, b, activation=activation)
    return x


@pytest.mark.parametrize("rows", [1, 6, 129])
def test_linear_chain_matches_layer_by_layer(rows: int) -> None:
    """The native backend's FP32 chain: one compiled call for consecutive layers (BLAS layer
    by layer past 128 rows), with and without bias, every activation, C- or F-ordered w."""
    pytest.importorskip("numba")
    from accelserve.kernels.cpu.linear import LinearChain

    layers = _chain_layers()
    x = with_specials(random_array((2, rows, 9), "float32", seed=13))
    got = LinearChain(layers)(x)
    assert got.shape == (2, rows, 5) and got.dtype == np.float32
    assert_close(got, _layer_by_layer(x, layers), 1e-4, 1e-4)


@pytest.mark.parametrize("special", [False, True])
def test_linear_chain_single_row(special: bool) -> None:
    """One row on one thread runs over C-ordered copies of the weights (the row kernel): the
    same answer, NaN/Inf included, and the copies are counted in ``extra_bytes``."""
    pytest.importorskip("numba")
    from accelserve.kernels.cpu.linear import LinearChain

    layers = _chain_layers()
    chain = LinearChain(layers)
    # Each layer is held once more: F-ordered w as a C copy, C-ordered w as the w.T copy.
    assert chain.extra_bytes == sum(w.nbytes for w, _, _ in layers)
    x = random_array((1, 9), "float32", seed=14)
    if special:
        x[0, 2], x[0, 5] = np.nan, np.inf
    got = chain(x)
    assert got.shape == (1, 5)
    assert_close(got, _layer_by_layer(x, layers), 1e-4, 1e-4)
    assert_close(got, chain(np.vstack([x, x]))[:1], 1e-5, 1e-5)  # the batch kernel agrees


def test_linear_chain_without_the_row_kernel() -> None:
    """``one_row_kernel=False`` (also what a chain gets when it runs on several threads): no
    row-major copies, a single row takes the batch kernel with the same answer."""
    pytest.importorskip("numba")
    from accelserve.kernels.cpu.linear import LinearChain

    layers = _chain_layers()
    chain = LinearChain(layers, one_row_kernel=False)
    # Only C-ordered w are copied (to w.T); the F-ordered ones are used as they are.
    assert chain.extra_bytes == sum(w.nbytes for w, _, _ in layers if not w.flags.f_contiguous)
    x = random_array((1, 9), "float32", seed=15)
    assert_close(chain(x), _layer_by_layer(x, layers), 1e-4, 1e-4)
