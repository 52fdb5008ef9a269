"""Helpers shared by the Triton kernels' Python wrappers."""

from __future__ import annotations

from typing import Any

import torch
import triton
from triton.runtime.interpreter import InterpretedFunction

from accelserve.errors import InvalidArgumentError


def interpreted(kernel: Any) -> bool:
    """Whether ``kernel`` (a jit function or an autotuner around one) runs in the interpreter,
    which is decided once, by TRITON_INTERPRET, when its module was imported."""
    while not isinstance(kernel, InterpretedFunction) and hasattr(kernel, "fn"):
        kernel = kernel.fn
    return isinstance(kernel, InterpretedFunction)


def check_tensors(op: str, kernel: Any, *tensors: torch.Tensor | None) -> None:
    """CPU tensors need the interpreter; a compiled kernel needs every tensor on one GPU."""
    present = [t for t in tensors if t is not None]
    devices = {t.device for t in present}
    if len(devices) > 1:
        raise InvalidArgumentError(
            f"{op}: tensors are on several devices: {sorted(map(str, devices))}"
        )
    if present[0].device.type != "cuda" and not interpreted(kernel):
        raise InvalidArgumentError(
            f"{op}: provider 'triton' needs CUDA tensors; received tensors on "
            f"{present[0].device} (set TRITON_INTERPRET=1 before triton is imported to run the "
            "kernels on CPU through Triton's interpreter)"
        )


def device_guard(t: torch.Tensor) -> Any:
    """Launch on the tensor's own GPU, not whatever device is current."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else _Null()


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs follow torch's TF32 switch (off by default, like cuBLAS under torch)."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def next_pow2(n: int) -> int:
    return int(triton.next_power_of_2(max(int(n), 1)))


def sm_count(t: torch.Tensor) -> int:
    if t.device.type != "cuda":
        return 4
    return int(torch.cuda.get_device_properties(t.device).multi_processor_count)


def warps_for(block: int) -> int:
    """Warps for a 1-d block of ``block`` elements: about 8 elements per thread, 1 to 16 warps."""
    return max(1, min(16, block // 256))
