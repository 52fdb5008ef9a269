"""Matrix multiplication in Triton: naive, unrolled and blocked kernels.

- naive: one program per output element; the dot product walks K in BLOCK_K-wide vectors and
  nothing is shared between programs (every program re-reads its row and column).
- unrolled: the same, with the K loop unrolled UNROLL times (compile-time) into independent
  accumulators, so loads of later steps overlap the math of earlier ones.
- blocked: each program owns a [BLOCK_M, BLOCK_N] tile and walks K in BLOCK_K steps on the
  tensor cores into a float32 accumulator; tiles are visited in groups of GROUP_M rows so that
  neighbouring programs share A and B tiles in L2. Autotuned on GPU (keyed by a power-of-two
  bucket of M, so serving batch sizes do not each trigger a tuning run); one fixed config in the
  interpreter. The optional bias + activation epilogue (used by ``linear``) is applied to the
  accumulator before the single store.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from accelserve.kernels.triton._launch import (
    check_tensors,
    device_guard,
    dot_precision,
    interpreted,
    next_pow2,
)

ACTIVATION_CODES = {None: 0, "relu": 1, "gelu": 2, "silu": 3}


@triton.jit
def _activation(x, ACTIVATION: tl.constexpr):
    if ACTIVATION == 1:
        x = tl.where(x < 0.0, 0.0, x)  # NaN passes through, as in torch.relu
    elif ACTIVATION == 2:
        x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    elif ACTIVATION == 3:
        x = x * tl.sigmoid(x)
    return x


@triton.jit
def _matmul_naive_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    i = pid // N
    j = pid % N
    acc = tl.zeros((BLOCK_K,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + i * stride_am + ks * stride_ak, mask=ks < K, other=0.0)
        b = tl.load(b_ptr + ks * stride_bk + j * stride_bn, mask=ks < K, other=0.0)
        acc += a.to(tl.float32) * b.to(tl.float32)
    total = tl.sum(acc, axis=0)
    tl.store(c_ptr + i * stride_cm + j * stride_cn, total.to(c_ptr.dtype.element_ty))


@triton.jit
def _matmul_unrolled_kernel(
    a_ptr, b_ptr, c_ptr, M, N, K,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_K: tl.constexpr, UNROLL: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    i = pid // N
    j = pid % N
    acc = tl.zeros((UNROLL, BLOCK_K), dtype=tl.float32)
    steps = tl.arange(0, UNROLL)[:, None] * BLOCK_K + tl.arange(0, BLOCK_K)[None, :]
    for k0 in range(0, K, BLOCK_K * UNROLL):
        # UNROLL steps of the K loop in one iteration: UNROLL independent rows of accumulators.
        ks = k0 + steps
        a = tl.load(a_ptr + i * stride_am + ks * stride_ak, mask=ks < K, other=0.0)
        b = tl.load(b_ptr + ks * stride_bk + j * stride_bn, mask=ks < K, other=0.0)
        acc += a.to(tl.float32) * b.to(tl.float32)
    total = tl.sum(tl.sum(acc, axis=1), axis=0)
    tl.store(c_ptr + i * stride_cm + j * stride_cn, total.to(c_ptr.dtype.element_ty))


@triton.jit
def _matmul_blocked_kernel(
    a_ptr, b_ptr, c_ptr, bias_ptr, M, N, K, M_BUCKET,
    stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
    UPCAST: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = min(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows/columns past the edge read a valid row instead (results there are never stored),
    # which keeps the hot loop free of M/N masks. (When N is a multiple of 16, Triton's
    # specialization still sees the wrapped offsets as contiguous and vectorizes the loads.)
    safe_m = (offs_m % M).to(tl.int64)
    safe_n = (offs_n % N).to(tl.int64)
    a_ptrs = a_ptr + safe_m[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + safe_n[None, :] * stride_bn

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k0, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k0, other=0.0)
        if UPCAST:  # the interpreter cannot multiply bf16
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    acc = _activation(acc, ACTIVATION)
    c_ptrs = c_ptr + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


def _config(bm: int, bn: int, bk: int, stages: int, warps: int) -> triton.Config:
    return triton.Config(
        {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8},
        num_stages=stages,
        num_warps=warps,
    )


# Large tiles for big square problems (H100: 128x256x64 reaches cuBLAS territory), smaller
# ones for skinny serving batches. Configs that do not fit shared memory are skipped.
CONFIGS = [
    _config(128, 256, 64, 3, 8),
    _config(256, 128, 64, 3, 8),
    _config(128, 128, 64, 4, 8),
    _config(128, 128, 64, 4, 4),
    _config(128, 64, 64, 4, 4),
    _config(64, 128, 64, 4, 4),
    _config(64, 64, 64, 4, 4),
    _config(32, 64, 64, 5, 2),
    _config(16, 64, 128, 4, 4),
]
_matmul_blocked_tuned = triton.autotune(configs=CONFIGS, key=["M_BUCKET", "N", "K"])(
    _matmul_blocked_kernel
)
INTERPRETER_TILE = {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 2}
NAIVE_BLOCK_K, UNROLL = 64, 4


def matmul(a: torch.Tensor, b: torch.Tensor, algorithm: str = "auto") -> torch.Tensor:
    if algorithm in ("naive", "unrolled"):
        return _elementwise_dot(a, b, algorithm)
    return blocked(a, b)


def _elementwise_dot(a: torch.Tensor, b: torch.Tensor, algorithm: str) -> torch.Tensor:
    kernel = _matmul_naive_kernel if algorithm == "naive" else _matmul_unrolled_kernel
    check_tensors("matmul", kernel, a, b)
    (m, k), n = a.shape, b.shape[1]
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    block_k = min(NAIVE_BLOCK_K, next_pow2(k))
    extra = {"UNROLL": UNROLL} if algorithm == "unrolled" else {}
    with device_guard(a):
        kernel[(m * n,)](
            a, b, c, m, n, k, *a.stride(), *b.stride(), *c.stride(),
            BLOCK_K=block_k, num_warps=1, **extra,
        )  # fmt: skip
    return c


def blocked(
    a: torch.Tensor,
    b: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = None,
) -> torch.Tensor:
    """The tiled kernel, with the optional fused epilogue; ``a`` is 2-d."""
    check_tensors("matmul", _matmul_blocked_kernel, a, b, bias)
    (m, k), n = a.shape, b.shape[1]
    c = torch.empty((m, n), dtype=a.dtype, device=a.device)
    args = (
        a, b, c, bias if bias is not None else c, m, n, k, next_pow2(m),
        *a.stride(), *b.stride(), *c.stride(),
    )  # fmt: skip
    flags = {
        "HAS_BIAS": bias is not None,
        "ACTIVATION": ACTIVATION_CODES[activation],
        "PRECISION": dot_precision(a.dtype),
    }
    with device_guard(a):
        if interpreted(_matmul_blocked_kernel):
            tiles = (triton.cdiv(m, 16) * triton.cdiv(n, 16),)
            _matmul_blocked_kernel[tiles](*args, **flags, **INTERPRETER_TILE, UPCAST=True)
        else:

            def grid(meta: dict[str, int]) -> tuple[int]:
                return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

            _matmul_blocked_tuned[grid](*args, **flags, UPCAST=False)
    return c
