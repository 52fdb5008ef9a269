"""The triton provider on an NVIDIA GPU, at serving and benchmark sizes, against the float64
reference (computed on the host). Run: pytest tests/gpu -m gpu."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from accelserve import kernels
from accelserve.kernels.testing import assert_close, random_array, tolerance, with_specials


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU (torch.cuda.is_available())"),
]
DTYPES = ["float32", "float16", "bfloat16"]


def cuda(x: np.ndarray) -> Any:
    from accelserve.kernels._arrays import to_torch

    return to_torch(x).cuda()


def ref(op: str, *arrays: np.ndarray, **kwargs: Any) -> np.ndarray:
    return getattr(kernels, op)(*arrays, provider="reference", **kwargs)


def test_cuda_tensors_dispatch_to_triton_and_stay_on_the_gpu() -> None:
    x = cuda(random_array((64, 384), "float32"))
    assert kernels.resolve_provider("l2_normalize", x) == "triton"
    y = kernels.l2_normalize(x)
    assert y.is_cuda and y.dtype == x.dtype


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape",
    [(1, 1, 1), (127, 257, 509), (1024, 1024, 1024), (4096, 64, 8), (3, 4096, 4096)],
    ids=str,
)
def test_matmul_blocked_auto(shape: tuple[int, int, int], dtype: str) -> None:
    m, k, n = shape
    a, b = random_array((m, k), dtype, 1), random_array((k, n), dtype, 2)
    expected = ref("matmul", a, b)
    atol, rtol = tolerance(dtype)
    atol *= max(1.0, np.sqrt(k) / 8)  # longer dot products, larger absolute rounding
    for algorithm in ("blocked", "auto"):
        got = kernels.matmul(cuda(a), cuda(b), algorithm=algorithm)
        assert_close(got, expected, atol, rtol, name=f"{algorithm} {shape}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ["naive", "unrolled"])
def test_matmul_naive_unrolled(algorithm: str, dtype: str) -> None:
    a, b = random_array((129, 333), dtype, 3), random_array((333, 65), dtype, 4)
    atol, rtol = tolerance(dtype)
    got = kernels.matmul(cuda(a), cuda(b), algorithm=algorithm)
    assert_close(got, ref("matmul", a, b), atol * 3, rtol, name=algorithm)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", [None, "relu", "gelu", "silu"])
def test_linear(activation: str | None, dtype: str) -> None:
    x = random_array((8, 64, 384), dtype, 5)
    w, b = random_array((384, 1536), dtype, 6, scale=0.05), random_array((1536,), dtype, 7)
    atol, rtol = tolerance(dtype)
    got = kernels.linear(cuda(x), cuda(w), cuda(b), activation=activation)
    assert_close(got, ref("linear", x, w, b, activation=activation), atol * 2, rtol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["reduce_sum", "reduce_mean"])
def test_reductions(op: str, dtype: str) -> None:
    atol, rtol = tolerance(dtype)
    for shape in [(4096, 4096), (3, 1_000_003), (999, 7, 33)]:
        x = random_array(shape, dtype, 8)
        for axis in (None, *range(len(shape))):
            got = kernels.__dict__[op](cuda(x), axis=axis)
            scale = 1.0 if op == "reduce_mean" else np.sqrt(x.size if axis is None else shape[axis])
            assert_close(got, ref(op, x, axis=axis), atol * scale, rtol, name=f"{shape} {axis}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_l2_normalize(dtype: str) -> None:
    atol, rtol = tolerance(dtype)
    for shape, axis in [
        ((4096, 4096), -1),
        ((4096, 8192), -1),
        ((2, 100_000), -1),
        ((64, 33, 384), 1),
        ((1, 1), 0),
    ]:
        x = random_array(shape, dtype, 9)
        got = kernels.l2_normalize(cuda(x), axis=axis)
        assert_close(got, ref("l2_normalize", x, axis=axis), atol, rtol, name=str(shape))


@pytest.mark.parametrize("dtype", DTYPES)
def test_masked_mean_pool_l2(dtype: str) -> None:
    hidden = random_array((64, 512, 1024), dtype, 10)
    lengths = np.random.default_rng(11).integers(1, 513, size=64)
    mask = (np.arange(512)[None, :] < lengths[:, None]).astype(np.int64)
    got = kernels.masked_mean_pool_l2(cuda(hidden), cuda(mask))
    assert got.dtype.is_floating_point and str(got.dtype) == "torch.float32"
    assert_close(got, ref("masked_mean_pool_l2", hidden, mask), 1e-5, 1e-4)


def test_add_broadcasting() -> None:
    for sa, sb in [((4096, 4096), (4096,)), ((64, 128, 1), (64, 1, 384)), ((33, 77), (33, 77))]:
        a, b = random_array(sa, "bfloat16", 12), random_array(sb, "bfloat16", 13)
        assert_close(kernels.add(cuda(a), cuda(b)), ref("add", a, b), *tolerance("bfloat16"))


def test_nan_inf_parity() -> None:
    x = with_specials(random_array((256, 1000), "float32", 14))
    for op, kwargs in [
        ("l2_normalize", {}),
        ("reduce_sum", {"axis": 1}),
        ("reduce_sum", {"axis": 0}),
    ]:
        assert_close(
            getattr(kernels, op)(cuda(x), **kwargs), ref(op, x, **kwargs), 1e-3, 1e-4, name=op
        )
    a, b = (
        with_specials(random_array((200, 64), "float16", 15)),
        random_array((64, 96), "float16", 16),
    )
    assert_close(kernels.matmul(cuda(a), cuda(b)), ref("matmul", a, b), 5e-3, 2e-3)
