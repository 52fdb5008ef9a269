"""Device strings, discovery and capabilities.

``parse_device`` turns any accepted spelling into a ``Device``; ``resolve_device`` also checks
that the device exists on this host and otherwise raises a ``DeviceError`` that lists what does.
Discovery uses torch or nvidia-ml-py for CUDA and jax for TPUs, each only if installed.

Host devices: ``cpu:N`` is the N-th host device as XLA numbers them. Normally there is one,
``cpu:0``; under ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` there are K (``cpu:0`` ..
``cpu:K-1``), all sharing the host's cores and memory. The JAX backend runs an instance on
``jax.devices("cpu")[N]``; the other backends run any ``cpu:N`` on the host CPU.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from accelserve.errors import DeviceError

KINDS = ("cpu", "cuda", "tpu")
_ALIASES = {"cpu": "cpu", "cuda": "cuda", "gpu": "cuda", "tpu": "tpu"}
_PLAIN = re.compile(r"^(cpu|cuda|gpu|tpu)(?::(\d+))?$")
_TENSORFLOW = re.compile(r"^/device:(cpu|gpu|tpu):(\d+)$")
_HOST_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=(\d+)")
ACCEPTED = (
    "cpu, cpu:N, cuda, cuda:N, gpu:N, tpu:N, auto, /device:CPU:N, /device:GPU:N, /device:TPU:N"
)


@dataclass(frozen=True, slots=True)
class Device:
    kind: str  # "cpu" | "cuda" | "tpu"
    index: int = 0

    def __str__(self) -> str:
        return f"{self.kind}:{self.index}"

    @property
    def tensorflow_name(self) -> str:
        return f"/device:{'GPU' if self.kind == 'cuda' else self.kind.upper()}:{self.index}"


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device: Device
    name: str
    memory_bytes: int | None = None
    peak_flops: float | None = None  # dense fp32 (CPU) or bf16 tensor-core (GPU/TPU), FLOP/s
    memory_bandwidth: float | None = None  # bytes/s

    def as_dict(self) -> dict[str, object]:
        return {
            "device": str(self.device),
            "tensorflow_name": self.device.tensorflow_name,
            "name": self.name,
            "memory_bytes": self.memory_bytes,
            "peak_flops": self.peak_flops,
            "memory_bandwidth": self.memory_bandwidth,
        }


def parse_device(spec: str) -> Device:
    """Parse a device string without checking that the device exists ("auto" is resolved)."""
    text = spec.strip().lower()
    if text == "auto":
        return _best_available()
    match = _PLAIN.match(text) or _TENSORFLOW.match(text)
    if match is None:
        raise DeviceError(f"device: expected one of {ACCEPTED}; received {spec!r}")
    kind = _ALIASES[match.group(1)]
    return Device(kind, int(match.group(2) or 0))


def resolve_device(spec: str | Device, present: Sequence[Device] | None = None) -> Device:
    """Parse ``spec`` and check the device is present here (or in ``present``)."""
    device = spec if isinstance(spec, Device) else parse_device(spec)
    if present is None:
        present = [info.device for info in discover()]
    if device not in present:
        names = ", ".join(str(d) for d in present)
        hint = (
            " (more host devices: XLA_FLAGS=--xla_force_host_platform_device_count=K)"
            if device.kind == "cpu"
            else ""
        )
        raise DeviceError(f"device: {spec!s} is not present on this host; present: {names}{hint}")
    return device


def _best_available() -> Device:
    devices = [info.device for info in discover()]
    for kind in ("cuda", "tpu"):
        for device in devices:
            if device.kind == kind:
                return device
    return Device("cpu", 0)


def host_device_count() -> int:
    """Host (CPU) devices: 1, or K under ``XLA_FLAGS=--xla_force_host_platform_device_count=K``
    (read from the environment, as XLA does, so that jax need not be imported to know)."""
    counts = _HOST_COUNT_FLAG.findall(os.environ.get("XLA_FLAGS", ""))
    return max(1, int(counts[-1])) if counts else 1  # XLA takes the last occurrence


def discover() -> tuple[DeviceInfo, ...]:
    """Every device on this host, host devices first."""
    return (*_host_infos(host_device_count()), *_accelerator_infos())


@functools.cache
def _accelerator_infos() -> tuple[DeviceInfo, ...]:
    # Cached: the hardware does not change under us (the host device count is an env setting).
    return (*_cuda_infos(), *_tpu_infos())


@functools.cache
def _host_infos(count: int) -> tuple[DeviceInfo, ...]:
    cpu = _cpu_info()
    if count == 1:
        return (cpu,)
    shared = f"virtual host device {{}} of {count}, sharing the host's cores and memory"
    return tuple(
        DeviceInfo(
            Device("cpu", i),
            f"{cpu.name}; {shared.format(i)}",
            cpu.memory_bytes,
            cpu.peak_flops,
            cpu.memory_bandwidth,
        )
        for i in range(count)
    )


def _cpu_info() -> DeviceInfo:
    import psutil

    cores = os.cpu_count() or 1
    name = _cpu_model_name()
    # Peak: cores x 2.5 GHz-ish x 32 fp32 FLOP/cycle (AVX2 FMA x2). A rough roofline ceiling;
    # the kernel benchmarks measure the real memory bandwidth instead of trusting a table.
    freq = psutil.cpu_freq()
    hz = (freq.max or freq.current) * 1e6 if freq and (freq.max or freq.current) else 2.5e9
    return DeviceInfo(
        Device("cpu", 0),
        f"{name} ({cores} logical cores)",
        memory_bytes=psutil.virtual_memory().total,
        peak_flops=cores * hz * 32,
        memory_bandwidth=None,
    )


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


# Published dense bf16 tensor-core peaks and HBM bandwidth for the GPUs we target.
_GPU_PEAKS: dict[str, tuple[float, float]] = {
    "H100": (989e12, 3.35e12),
    "H200": (989e12, 4.8e12),
    "A100": (312e12, 2.0e12),
    "L4": (121e12, 0.3e12),
}


def _cuda_infos() -> list[DeviceInfo]:
    if os.environ.get("ACCELSERVE_DISABLE_CUDA"):
        return []
    names_and_memory: list[tuple[str, int]] = []
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            names_and_memory.append((name, int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)))
    except Exception:  # no driver, no library: fall back to torch
        try:
            import torch

            if torch.cuda.is_available():
                for i in range(torch.cuda.device_count()):
                    props = torch.cuda.get_device_properties(i)
                    names_and_memory.append((props.name, int(props.total_memory)))
        except ImportError:
            pass
    infos = []
    for i, (name, memory) in enumerate(names_and_memory):
        peak = next((v for k, v in _GPU_PEAKS.items() if k in name), (None, None))
        infos.append(DeviceInfo(Device("cuda", i), name, memory, peak[0], peak[1]))
    return infos


def _tpu_infos() -> list[DeviceInfo]:
    import importlib.util

    # Importing jax costs a second; only a host with libtpu can have a TPU, so look first.
    if importlib.util.find_spec("libtpu") is None:
        return []
    try:
        import jax

        tpus = jax.devices("tpu")
    except Exception:  # jax absent or no TPU backend
        return []
    return [DeviceInfo(Device("tpu", i), str(d.device_kind)) for i, d in enumerate(tpus)]
