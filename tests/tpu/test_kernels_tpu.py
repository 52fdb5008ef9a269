"""The pallas provider compiled for a TPU (interpret=False), at real sizes, against the float64
reference computed on the host. Run: pytest tests/tpu -m tpu."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from accelserve import kernels
from accelserve.kernels.testing import assert_close, random_array, tolerance, with_specials


def _has_tpu() -> bool:
    import importlib.util

    # Only a host with libtpu can have a TPU: do not pay for importing jax otherwise.
    if importlib.util.find_spec("jax") is None or importlib.util.find_spec("libtpu") is None:
        return False
    try:
        import jax

        return bool(jax.devices("tpu"))
    except RuntimeError:
        return False


pytestmark = [
    pytest.mark.tpu,
    pytest.mark.skipif(not _has_tpu(), reason="needs a TPU (jax finds no 'tpu' devices)"),
]
DTYPES = ["float32", "bfloat16"]


def tpu(x: np.ndarray) -> Any:
    import jax

    return jax.device_put(x, jax.devices("tpu")[0])


def ref(op: str, *arrays: np.ndarray, **kwargs: Any) -> np.ndarray:
    return getattr(kernels, op)(*arrays, provider="reference", **kwargs)


def test_tpu_arrays_dispatch_to_pallas() -> None:
    x = tpu(random_array((64, 384), "float32"))
    assert kernels.resolve_provider("l2_normalize", x) == "pallas"
    assert kernels.l2_normalize(x).devices() == x.devices()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(1, 1, 1), (127, 257, 509), (1024, 1024, 1024), (8, 4096, 4096)], ids=str
)
def test_matmul(shape: tuple[int, int, int], dtype: str) -> None:
    m, k, n = shape
    a, b = random_array((m, k), dtype, 1), random_array((k, n), dtype, 2)
    atol, rtol = tolerance(dtype)
    atol *= max(1.0, np.sqrt(k) / 8)
    algorithms = ["blocked", "auto"] + (["naive", "unrolled"] if m * n * k <= 1 << 27 else [])
    for algorithm in algorithms:
        got = kernels.matmul(tpu(a), tpu(b), algorithm=algorithm)
        assert_close(got, ref("matmul", a, b), atol, rtol, name=f"{algorithm} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "silu"])
def test_linear(activation: str | None, dtype: str) -> None:
    x = random_array((512, 384), dtype, 5)
    w, b = random_array((384, 1536), dtype, 6, scale=0.05), random_array((1536,), dtype, 7)
    atol, rtol = tolerance(dtype)
    got = kernels.linear(tpu(x), tpu(w), tpu(b), activation=activation)
    assert_close(got, ref("linear", x, w, b, activation=activation), atol * 2, rtol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reductions_and_l2(dtype: str) -> None:
    atol, rtol = tolerance(dtype)
    for shape in [(4096, 4096), (3, 1_000_000)]:
        x = random_array(shape, dtype, 8)
        for axis in (None, 0, 1):
            for op in ("reduce_sum", "reduce_mean"):
                scale = (
                    1.0 if op == "reduce_mean" else np.sqrt(x.size if axis is None else shape[axis])
                )
                got = getattr(kernels, op)(tpu(x), axis=axis)
                assert_close(
                    got, ref(op, x, axis=axis), atol * scale, rtol, name=f"{op} {shape} {axis}"
                )
        assert_close(kernels.l2_normalize(tpu(x)), ref("l2_normalize", x), atol, rtol)


def test_masked_mean_pool_l2() -> None:
    hidden = random_array((64, 512, 1024), "bfloat16", 10)
    lengths = np.random.default_rng(11).integers(1, 513, size=64)
    mask = np.arange(512)[None, :] < lengths[:, None]
    got = kernels.masked_mean_pool_l2(tpu(hidden), tpu(mask))
    assert_close(got, ref("masked_mean_pool_l2", hidden, mask), 1e-5, 1e-4)


def test_add_and_nan_parity() -> None:
    a, b = random_array((4096, 4096), "bfloat16", 12), random_array((4096,), "bfloat16", 13)
    assert_close(kernels.add(tpu(a), tpu(b)), ref("add", a, b), *tolerance("bfloat16"))
    x = with_specials(random_array((256, 1024), "float32", 14))
    assert_close(kernels.l2_normalize(tpu(x)), ref("l2_normalize", x), 1e-5, 1e-5)
