"""accelserve's compute kernels: matmul, add, fused linear, reductions, L2 normalization.

Each op is one function dispatched by where its inputs live: NumPy arrays (and CPU arrays of
other libraries) run on the ``cpu`` provider (BLAS + numba-compiled fused row kernels), torch
CUDA tensors and other CUDA DLPack producers on ``triton``, jax arrays on a TPU on ``pallas``.
Results come back in the caller's library, on the caller's device. ``provider=`` or the
``ACCELSERVE_KERNEL_PROVIDER`` environment variable force a provider; ``reference`` (plain NumPy,
float64 accumulation) is the ground truth every other provider is tested against.

Importing this package imports NumPy only; providers load on first use.
"""

from __future__ import annotations

from typing import Any

from accelserve.errors import InvalidArgumentError
from accelserve.kernels import _checks, _registry
from accelserve.kernels._arrays import dtype_name, shape_of
from accelserve.kernels._dispatch import gather, resolve, run

__all__ = [
    "OPS",
    "add",
    "available_providers",
    "l2_normalize",
    "linear",
    "masked_mean_pool_l2",
    "matmul",
    "providers",
    "reduce_mean",
    "reduce_sum",
    "resolve_provider",
]

OPS = _registry.OPS


def matmul(a: Any, b: Any, algorithm: str = "auto", provider: str | None = None) -> Any:
    """``a @ b`` for 2-d ``a`` [M, K] and ``b`` [K, N], in their dtype (f32 accumulation).

    ``algorithm``: ``naive`` (one output element per program, no reuse), ``unrolled`` (the K
    loop unrolled by a compile-time factor), ``blocked`` (tiled, grouped tile order), ``auto``
    (the fastest for the shape and device).
    """
    op = "matmul"
    arrays, where = gather(op, {"a": a, "b": b})
    _checks.choice(op, "algorithm", algorithm, _checks.ALGORITHMS)
    _checks.same_dtype(op, arrays)
    (m, k), (k2, n) = _checks.ndim(op, "a", arrays["a"], 2), _checks.ndim(op, "b", arrays["b"], 2)
    if k != k2:
        raise InvalidArgumentError(
            f"matmul: inner dimensions differ: a.shape=({m}, {k}), b.shape=({k2}, {n}); "
            f"expected b.shape[0] == {k}"
        )
    return run(op, arrays, where, {"algorithm": algorithm}, provider)


def add(a: Any, b: Any, provider: str | None = None) -> Any:
    """Elementwise ``a + b`` with NumPy broadcasting; both arrays share one dtype."""
    op = "add"
    arrays, where = gather(op, {"a": a, "b": b})
    _checks.same_dtype(op, arrays)
    _checks.broadcast_shape(op, shape_of(arrays["a"]), shape_of(arrays["b"]))
    return run(op, arrays, where, {}, provider)


def linear(
    x: Any,
    w: Any,
    b: Any = None,
    activation: str | None = None,
    provider: str | None = None,
) -> Any:
    """Fused ``activation(x @ w + b)``: ``x`` [..., K], ``w`` [K, N], ``b`` [N] or None.

    ``activation``: None, ``relu``, ``gelu`` (exact, erf form) or ``silu``. Bias and activation
    are applied to the f32 accumulator before the single store.
    """
    op = "linear"
    named = {"x": x, "w": w} if b is None else {"x": x, "w": w, "b": b}
    arrays, where = gather(op, named)
    _checks.choice(op, "activation", activation, _checks.ACTIVATIONS)
    _checks.same_dtype(op, arrays)
    xs, (k, n) = shape_of(arrays["x"]), _checks.ndim(op, "w", arrays["w"], 2)
    if not xs or xs[-1] != k:
        raise InvalidArgumentError(
            f"linear: x.shape[-1] must equal w.shape[0]={k}; received x.shape={xs}"
        )
    if b is not None and shape_of(arrays["b"]) != (n,):
        raise InvalidArgumentError(
            f"linear: b must have shape ({n},) (w.shape[1]); received {shape_of(arrays['b'])}"
        )
    arrays.setdefault("b", None)
    return run(op, arrays, where, {"activation": activation}, provider)


def reduce_sum(x: Any, axis: int | None = None, provider: str | None = None) -> Any:
    """Sum over ``axis`` (None: every element), blockwise, f32 accumulation for 16-bit input."""
    return _reduce("reduce_sum", x, axis, provider)


def reduce_mean(x: Any, axis: int | None = None, provider: str | None = None) -> Any:
    """Mean over ``axis`` (None: every element); same algorithm as :func:`reduce_sum`."""
    return _reduce("reduce_mean", x, axis, provider)


def _reduce(op: str, x: Any, axis: int | None, provider: str | None) -> Any:
    arrays, where = gather(op, {"x": x})
    rank = len(shape_of(arrays["x"]))
    _checks.floating(op, "x", arrays["x"])
    norm_axis = _checks.axis(op, axis, max(rank, 1), allow_none=True)
    if rank == 0:
        norm_axis = None
    return run(op, arrays, where, {"axis": norm_axis}, provider)


def l2_normalize(x: Any, axis: int = -1, eps: float = 1e-12, provider: str | None = None) -> Any:
    """``x / max(||x||_2, eps)`` along ``axis``, in ``x``'s dtype (f32 math for 16-bit)."""
    op = "l2_normalize"
    arrays, where = gather(op, {"x": x})
    rank = len(shape_of(arrays["x"]))
    _checks.floating(op, "x", arrays["x"])
    if rank == 0:
        raise InvalidArgumentError("l2_normalize: x must have at least 1 dimension")
    norm_axis = _checks.axis(op, axis, rank, allow_none=False)
    eps = _checks.positive(op, "eps", eps)
    return run(op, arrays, where, {"axis": norm_axis, "eps": eps}, provider)


def masked_mean_pool_l2(
    hidden: Any, mask: Any, eps: float = 1e-12, provider: str | None = None
) -> Any:
    """Sentence-embedding head: mean of ``hidden`` [B, T, H] over tokens where ``mask`` [B, T]
    is nonzero, then L2-normalized; float32 [B, H]. Masked tokens are never read, so padding
    garbage (even NaN) cannot leak in; a row with no tokens gives zeros."""
    op = "masked_mean_pool_l2"
    arrays, where = gather(op, {"hidden": hidden, "mask": mask})
    _checks.floating(op, "hidden", arrays["hidden"])
    bsz, t, _h = _checks.ndim(op, "hidden", arrays["hidden"], 3)
    if _checks.ndim(op, "mask", arrays["mask"], 2) != (bsz, t):
        raise InvalidArgumentError(
            f"masked_mean_pool_l2: mask must have shape ({bsz}, {t}) (hidden.shape[:2]); "
            f"received {shape_of(arrays['mask'])}"
        )
    mask_dtype = dtype_name(arrays["mask"])
    if mask_dtype != "bool" and not mask_dtype.startswith(("int", "uint")):
        raise InvalidArgumentError(
            f"masked_mean_pool_l2: mask must be bool or integer (0/1); received {mask_dtype}"
        )
    eps = _checks.positive(op, "eps", eps)
    return run(op, arrays, where, {"eps": eps}, provider)


def providers(op: str) -> list[str]:
    """Every provider registered for ``op`` on any device kind."""
    return _registry.providers(op)


def available_providers(op: str, device: str = "cpu") -> list[str]:
    """Providers registered for ``op`` on ``device`` (a device string or kind: "cpu",
    "cuda:0", "tpu"...) whose packages are installed here, the default first."""
    from accelserve.devices import parse_device

    kind = parse_device(device).kind
    return [p for p in _registry.on_device(op, kind) if _registry.installed(p)]


def resolve_provider(op: str, *arrays: Any, provider: str | None = None) -> str:
    """The provider a call of ``op`` on ``arrays`` would run on (without running it)."""
    _registry.check_op(op)
    _, where = gather(op, {f"arg{i}": x for i, x in enumerate(arrays)})
    return resolve(op, where, provider)
