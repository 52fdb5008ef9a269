"""masked_mean_pool_l2 on every provider against the reference."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.kernels.testing import assert_close, random_array

from .conftest import Runner, reference

SHAPES = [(1, 1, 1), (2, 7, 13), (5, 3, 384), (3, 130, 9), (9, 2, 64)]


def _mask(batch: int, tokens: int, dtype: type, seed: int = 0) -> np.ndarray:
    lengths = np.random.default_rng(seed).integers(1, tokens + 1, size=batch)
    return (np.arange(tokens)[None, :] < lengths[:, None]).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_reference(run: Runner, shape: tuple[int, int, int], dtype: str) -> None:
    hidden = random_array(shape, dtype, seed=1)
    mask = _mask(shape[0], shape[1], np.int64)
    got = run("masked_mean_pool_l2", hidden, mask)
    assert got.dtype == np.float32 and got.shape == (shape[0], shape[2])
    # Output is float32 whatever the input: the math is float32 throughout.
    assert_close(got, reference("masked_mean_pool_l2", hidden, mask), 1e-5, 1e-4)


@pytest.mark.parametrize("mask_dtype", [np.bool_, np.int32, np.uint8])
def test_mask_dtypes_and_empty_rows(run: Runner, mask_dtype: type) -> None:
    hidden = random_array((4, 6, 10), "float32", seed=2)
    mask = _mask(4, 6, mask_dtype, seed=3)
    mask[2] = 0  # no tokens at all: zeros, not NaN
    got = run("masked_mean_pool_l2", hidden, mask)
    assert_close(got, reference("masked_mean_pool_l2", hidden, mask), 1e-5, 1e-4)
    assert not got[2].any()


def test_masked_tokens_are_never_read(run: Runner) -> None:
    hidden = random_array((3, 8, 16), "float32", seed=4)
    mask = _mask(3, 8, np.int64, seed=5)
    hidden[mask == 0] = np.nan  # garbage in the padding must not leak into the embedding
    got = run("masked_mean_pool_l2", hidden, mask)
    assert np.isfinite(got).all()
    assert_close(got, reference("masked_mean_pool_l2", hidden, mask), 1e-5, 1e-4)


def test_nan_in_a_kept_token_propagates(run: Runner) -> None:
    hidden = random_array((2, 4, 5), "float32", seed=6)
    mask = np.ones((2, 4), dtype=np.int64)
    hidden[1, 2, 3] = np.nan
    got = run("masked_mean_pool_l2", hidden, mask)
    assert_close(got, reference("masked_mean_pool_l2", hidden, mask), 1e-5, 1e-4)


def test_matches_sentence_transformers_formula() -> None:
    # The head sentence-transformers applies: sum(h * m) / clamp(sum(m), 1e-9), then normalize.
    from accelserve import kernels

    hidden = random_array((3, 12, 32), "float32", seed=7)
    mask = _mask(3, 12, np.int64, seed=8)
    m = mask[:, :, None].astype(np.float32)
    mean = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    expected = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    assert_close(kernels.masked_mean_pool_l2(hidden, mask), expected, 1e-6, 1e-5)
