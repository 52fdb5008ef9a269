"""How busy the host's devices are right now: CPU utilization and memory (psutil) and, where
nvidia-ml-py finds a driver, each NVIDIA GPU's utilization, memory and power (NVML).

Plain numbers and no metrics library: the metrics frontend names them (Triton's gauges) when
Prometheus scrapes. ``devices.py`` tells what devices exist; this module how loaded they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

from accelserve.devices import nvml, visible_nvml_handles


@dataclass(frozen=True)
class CpuUsage:
    utilization: float  # 0..1, since the previous reading
    memory_total_bytes: int
    memory_used_bytes: int


@dataclass(frozen=True)
class GpuUsage:
    uuid: str
    # Keys of GPU_READINGS; a reading the board does not support (e.g. power) is absent.
    readings: dict[str, float]


GPU_READINGS: dict[str, Callable[[Any, Any], float]] = {  # name -> read(nvml, handle)
    "utilization": lambda nvml, h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0,
    "memory_total_bytes": lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).total,
    "memory_used_bytes": lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).used,
    "power_watts": lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0,  # mW -> W
}


class DeviceSampler:
    """Reads CPU and GPU usage on demand; construction finds the GPUs once (NVML init can
    take a while: build it off the event loop)."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self._nvml: Any = nvml()
        # the GPUs CUDA_VISIBLE_DEVICES leaves this server, not every GPU of the node
        self._gpus: list[tuple[str, Any]] = visible_nvml_handles()

    def cpu(self) -> CpuUsage:
        memory = psutil.virtual_memory()
        return CpuUsage(
            utilization=psutil.cpu_percent(interval=None) / 100.0,
            memory_total_bytes=memory.total,
            memory_used_bytes=memory.total - memory.available,
        )

    def gpus(self) -> list[GpuUsage]:
        lib = self._nvml
        usages = []
        for uuid, handle in self._gpus:
            readings = {}
            for name, read in GPU_READINGS.items():
                try:
                    readings[name] = read(lib, handle)
                except lib.NVMLError:  # e.g. power readings unsupported on this board
                    continue
            usages.append(GpuUsage(uuid, readings))
        return usages
