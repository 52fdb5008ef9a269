"""Provider registry, dispatch by array type and device, forcing, and argument errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from accelserve import kernels
from accelserve.errors import InvalidArgumentError
from accelserve.kernels import _registry
from accelserve.kernels.testing import InterpreterWorker, assert_close, random_array


def test_import_pulls_in_no_framework() -> None:
    code = (
        "import sys, accelserve.kernels as k; "
        "k.providers('matmul'); k.available_providers('l2_normalize'); "
        "loaded = [m for m in ('torch', 'jax', 'triton', 'numba') if m in sys.modules]; "
        "print(','.join(loaded))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_registry_has_every_op_on_every_device_kind() -> None:
    for op in kernels.OPS:
        assert kernels.providers(op) == ["cpu", "reference", "triton", "pallas"]
        for kind, default in (("cpu", "cpu"), ("cuda", "triton"), ("tpu", "pallas")):
            assert _registry.REGISTRY[(op, kind)][0] == default


def test_available_providers_on_cpu() -> None:
    assert kernels.available_providers("matmul", "cpu")[:2] == ["cpu", "reference"]
    assert kernels.available_providers("matmul", "/device:CPU:0")[:2] == ["cpu", "reference"]
    assert kernels.available_providers("add", "tpu:0") == ["pallas", "reference"]


def test_numpy_goes_to_cpu_and_env_or_argument_force_a_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = random_array((3, 4), "float32")
    assert kernels.resolve_provider("l2_normalize", x) == "cpu"
    monkeypatch.setenv("ACCELSERVE_KERNEL_PROVIDER", "reference")
    assert kernels.resolve_provider("l2_normalize", x) == "reference"
    assert kernels.resolve_provider("l2_normalize", x, provider="cpu") == "cpu"


def test_unknown_provider_names_the_ones_that_exist() -> None:
    x = random_array((3, 4), "float32")
    with pytest.raises(InvalidArgumentError, match=r"cpu, reference, triton, pallas"):
        kernels.l2_normalize(x, provider="cuda-magic")


def test_device_kind_without_provider_is_a_clear_error() -> None:
    torch = pytest.importorskip("torch")
    x = torch.empty((3, 4), device="meta")
    with pytest.raises(
        InvalidArgumentError, match=r"no provider runs on device kind 'meta'.*cuda: triton"
    ):
        kernels.l2_normalize(x)


def test_torch_cpu_tensor_uses_cpu_and_comes_back_as_torch() -> None:
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 6)
    assert kernels.resolve_provider("l2_normalize", x) == "cpu"
    y = kernels.l2_normalize(x)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert_close(y, kernels.l2_normalize(x.numpy(), provider="reference"), 1e-6, 1e-6)
    yb = kernels.reduce_sum(x.to(torch.bfloat16), axis=1)
    assert isinstance(yb, torch.Tensor) and yb.dtype == torch.bfloat16


def test_jax_cpu_array_uses_cpu_and_forced_pallas_interprets() -> None:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.asarray(random_array((5, 7), "float32"))
    assert kernels.resolve_provider("l2_normalize", x) == "cpu"
    for provider in (None, "pallas"):
        y = kernels.l2_normalize(x, provider=provider)
        assert isinstance(y, jax.Array) and y.dtype == jnp.float32
        assert_close(y, kernels.l2_normalize(np.asarray(x), provider="reference"), 1e-6, 1e-6)


def test_dlpack_producer_on_cpu_is_accepted() -> None:
    class Producer:  # a minimal foreign array: only the DLPack protocol
        def __init__(self, a: np.ndarray) -> None:
            self.a = a

        def __dlpack__(self, **kwargs: object) -> object:
            return self.a.__dlpack__(**kwargs)

        def __dlpack_device__(self) -> tuple[int, int]:
            return self.a.__dlpack_device__()

    x = random_array((3, 5), "float32")
    y = kernels.l2_normalize(Producer(x))
    assert isinstance(y, np.ndarray)
    assert_close(y, kernels.l2_normalize(x, provider="reference"), 1e-6, 1e-6)


def test_triton_on_cpu_tensors_without_interpreter_is_a_clear_error() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    from accelserve.kernels.triton import l2_normalize as module
    from accelserve.kernels.triton._launch import interpreted

    if interpreted(module._l2_normalize_rows_kernel):
        pytest.skip("this process interprets triton kernels")
    with pytest.raises(InvalidArgumentError, match=r"needs CUDA tensors.*TRITON_INTERPRET=1"):
        kernels.l2_normalize(torch.randn(2, 3), provider="triton")


def test_interpreter_worker_dispatches_torch_cpu_tensors_to_triton(
    triton_worker: InterpreterWorker,
) -> None:
    x = random_array((3, 8), "float32")
    got, used = triton_worker.call("l2_normalize", x)  # torch CPU tensor, no provider
    assert used == "triton"
    assert_close(got, kernels.l2_normalize(x, provider="reference"), 1e-6, 1e-6)
    got, used = triton_worker.call("l2_normalize", x, as_torch=False)  # NumPy stays on cpu
    assert used == "cpu"
    with pytest.raises(InvalidArgumentError, match="float64"):
        triton_worker.call("l2_normalize", x.astype(np.float64), provider="triton")


# ---- argument errors ----------------------------------------------------------------------


def _f32(*shape: int) -> np.ndarray:
    return random_array(shape, "float32")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: kernels.matmul(_f32(2, 3), _f32(4, 5)),
            r"inner dimensions differ.*a.shape=\(2, 3\)",
        ),
        (lambda: kernels.matmul(_f32(2, 3, 1), _f32(3, 5)), r"a must have 2 dimensions"),
        (
            lambda: kernels.matmul(_f32(2, 3), _f32(3, 5), algorithm="fast"),
            r"algorithm must be one of",
        ),
        (
            lambda: kernels.matmul(_f32(2, 3), _f32(3, 5).astype(np.float16)),
            r"share one dtype.*a=float32, b=float16",
        ),
        (
            lambda: kernels.matmul(np.ones((2, 3), np.int32), np.ones((3, 2), np.int32)),
            r"a must be a floating array.*int32",
        ),
        (lambda: kernels.add(_f32(2, 3), _f32(4)), r"do not broadcast"),
        (lambda: kernels.add(_f32(2, 3), [1.0, 2.0, 3.0]), r"b: expected an array.*list"),
        (
            lambda: kernels.linear(_f32(2, 3), _f32(4, 5)),
            r"x.shape\[-1\] must equal w.shape\[0\]=4",
        ),
        (lambda: kernels.linear(_f32(2, 3), _f32(3, 5), _f32(4)), r"b must have shape \(5,\)"),
        (
            lambda: kernels.linear(_f32(2, 3), _f32(3, 5), activation="tanh"),
            r"activation must be one of",
        ),
        (lambda: kernels.reduce_sum(_f32(2, 3), axis=2), r"axis must be in \[-2, 1\]"),
        (lambda: kernels.reduce_mean(_f32(2, 3), axis=(0, 1)), r"axis must be None or an int"),
        (lambda: kernels.reduce_sum(_f32(0, 3)), r"must not be empty"),
        (lambda: kernels.l2_normalize(_f32(2, 3), eps=0), r"eps must be a number > 0"),
        (
            lambda: kernels.masked_mean_pool_l2(_f32(2, 3, 4), np.ones((2, 4), np.int64)),
            r"mask must have shape \(2, 3\)",
        ),
        (
            lambda: kernels.masked_mean_pool_l2(_f32(2, 3, 4), np.ones((2, 3), np.float32)),
            r"mask must be bool or integer",
        ),
        (
            lambda: kernels.masked_mean_pool_l2(_f32(2, 3), np.ones((2, 3), np.int64)),
            r"hidden must have 3 dimensions",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(call: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        call()  # type: ignore[operator]


def test_mixed_array_libraries_are_rejected() -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(
        InvalidArgumentError, match=r"one library on one device; a is a numpy.*b is a torch"
    ):
        kernels.add(_f32(2, 3), torch.ones(2, 3))


def test_provider_dtype_support_is_checked() -> None:
    pytest.importorskip("jax")
    with pytest.raises(
        InvalidArgumentError, match=r"provider 'pallas' supports bfloat16, float16, float32"
    ):
        kernels.l2_normalize(np.ones((2, 3)), provider="pallas")


def test_cpu_path_output_contract_for_the_server() -> None:
    # What the native backend and the embedding pipeline rely on: float32 out, fresh arrays,
    # any input layout.
    x = np.asfortranarray(_f32(6, 10))
    w = _f32(12, 10).T  # non-contiguous weight view
    y = kernels.linear(x, w, _f32(12), activation="gelu")
    assert y.dtype == np.float32 and y.shape == (6, 12) and y.flags.c_contiguous
    hidden = _f32(4, 7, 9)[:, ::-1, :]  # reversed-token view
    pooled = kernels.masked_mean_pool_l2(hidden, np.ones((4, 7), dtype=bool))
    assert pooled.dtype == np.float32 and pooled.shape == (4, 9)
    assert_close(np.linalg.norm(pooled, axis=1), np.ones(4), 1e-6, 1e-6)
