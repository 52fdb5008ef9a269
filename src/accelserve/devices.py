"""Device strings, discovery and capabilities.

``parse_device`` turns any accepted spelling into a ``Device``; ``resolve_device`` also checks
that the device exists on this host and otherwise raises a ``DeviceError`` that lists what does.
Discovery imports no framework to find GPUs: it asks NVML (nvidia-ml-py, if installed) or reads
the driver's ``/proc/driver/nvidia/gpus``, and numbers the GPUs that ``CUDA_VISIBLE_DEVICES``
leaves visible ``cuda:0``, ``cuda:1``... as CUDA does. TPUs are asked of jax, only on a host
with libtpu.

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
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True, slots=True)
class DriverGpu:
    """One GPU as the driver lists it (every GPU of the node, whatever CUDA_VISIBLE_DEVICES says)."""

    uuid: str  # "GPU-8932f937-..."
    name: str
    memory_bytes: int | None = None


def _cuda_infos() -> list[DeviceInfo]:
    if os.environ.get("ACCELSERVE_DISABLE_CUDA"):
        return []
    gpus = _driver_gpus()
    ordinals = visible_gpu_ordinals(os.environ.get("CUDA_VISIBLE_DEVICES"), [g.uuid for g in gpus])
    infos = []
    for i, ordinal in enumerate(ordinals):
        gpu = gpus[ordinal]
        peak = next((v for k, v in _GPU_PEAKS.items() if k in gpu.name), (None, None))
        infos.append(DeviceInfo(Device("cuda", i), gpu.name, gpu.memory_bytes, peak[0], peak[1]))
    return infos


def visible_gpu_ordinals(visible: str | None, uuids: Sequence[str]) -> list[int]:
    """The driver's ordinals of the GPUs a CUDA process sees, in its ``cuda:N`` order.

    ``visible`` is ``CUDA_VISIBLE_DEVICES`` (None when unset: every GPU) read as CUDA reads it:
    comma-separated indices or ``GPU-<uuid>`` (unique prefixes too); the list ends at the first
    entry that names no GPU, so "" means none; a repeated GPU makes CUDA see none at all. MIG
    instances (``MIG-...``) are not listed. ``uuids`` are the driver's GPUs in its own order
    (PCI bus order, CUDA's too unless ``CUDA_DEVICE_ORDER`` says otherwise).
    """
    if visible is None:
        return list(range(len(uuids)))
    chosen: list[int] = []
    for entry in visible.split(","):
        ordinal = _gpu_ordinal(entry.strip(), uuids)
        if ordinal is None:
            break
        if ordinal in chosen:
            return []
        chosen.append(ordinal)
    return chosen


def _gpu_ordinal(entry: str, uuids: Sequence[str]) -> int | None:
    if entry.startswith("GPU-"):
        matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(entry)]
        return matches[0] if len(matches) == 1 else None  # an ambiguous prefix names none
    digits = re.match(r"\d+", entry)  # CUDA parses like strtoul: "1x" is 1
    if digits is None or int(digits.group()) >= len(uuids):
        return None
    return int(digits.group())


@functools.cache
def nvml() -> Any:
    """The ``pynvml`` module, initialised, when nvidia-ml-py is installed and finds a driver;
    else None. Imported here and only here, on first use."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver or no GPU here
        return None
    return pynvml


def visible_nvml_handles() -> list[tuple[str, Any]]:
    """(uuid, NVML handle) of each GPU this process sees, in ``cuda:N`` order; [] without NVML."""
    lib = nvml()
    if lib is None:
        return []
    listed = _nvml_handles(lib)
    ordinals = visible_gpu_ordinals(os.environ.get("CUDA_VISIBLE_DEVICES"), [u for u, _ in listed])
    return [listed[i] for i in ordinals]


def _nvml_handles(lib: Any) -> list[tuple[str, Any]]:
    handles = [lib.nvmlDeviceGetHandleByIndex(i) for i in range(lib.nvmlDeviceGetCount())]
    return [(_text(lib.nvmlDeviceGetUUID(h)), h) for h in handles]


def _driver_gpus() -> list[DriverGpu]:
    lib = nvml()
    if lib is None:
        return proc_gpus()
    try:
        return [
            DriverGpu(
                uuid,
                _text(lib.nvmlDeviceGetName(handle)),
                int(lib.nvmlDeviceGetMemoryInfo(handle).total),
            )
            for uuid, handle in _nvml_handles(lib)
        ]
    except lib.NVMLError:  # a driver NVML cannot query: its files still list the GPUs
        return proc_gpus()


def proc_gpus(root: Path = Path("/proc/driver/nvidia/gpus")) -> list[DriverGpu]:
    """The GPUs the NVIDIA kernel driver lists (one folder per PCI bus id, in bus order, as NVML
    numbers them); the driver does not say their memory. [] without the driver."""
    gpus = []
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        try:
            lines = (folder / "information").read_text().splitlines()
        except OSError:
            continue
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        uuid, name = fields.get("GPU UUID", ""), fields.get("Model", "")
        if uuid:
            gpus.append(DriverGpu(uuid, name or "NVIDIA GPU"))
    return gpus


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
