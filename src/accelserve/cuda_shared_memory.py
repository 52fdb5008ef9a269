"""CUDA shared memory (Triton's extension): device memory a client shares through a CUDA IPC
handle, opened in this process with ``cudaIpcOpenMemHandle``.

CuPy is the CUDA runtime binding used, imported lazily here only, so a server whose clients
never register a CUDA region pays nothing for it. Tensors cross the region by synchronous
copies: an input is copied device-to-host for the model, an output host-to-device into the
region (simple and correct; a device-resident path can come later).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IPC_HANDLE_SIZE = 64  # bytes of a cudaIpcMemHandle_t

_runtime_lock = threading.Lock()
_runtime: Any = None  # cupy.cuda.runtime once imported; False when it cannot be


def cuda_runtime() -> Any:
    """CuPy's CUDA runtime module, or None when this server has no CUDA (no CuPy, no driver
    or no GPU)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _load_runtime()
        return _runtime or None


def _load_runtime() -> Any:
    try:
        import cupy  # lazily: only servers whose clients share GPU memory need it

        runtime = cupy.cuda.runtime
        if runtime.getDeviceCount() < 1:
            return False
    except Exception:  # ImportError, or CUDARuntimeError without a driver or a GPU
        return False
    return runtime


def device_count() -> int:
    runtime = cuda_runtime()
    return 0 if runtime is None else int(runtime.getDeviceCount())


class RegionClosedError(RuntimeError):
    """The region was unregistered (its handle closed) before a copy could start."""


@dataclass(slots=True)
class CudaRegion:
    """One client's device allocation, opened from its IPC handle. Copies and close take the
    region's lock, so unregistering never closes the handle under a copy in flight."""

    name: str
    device_id: int
    byte_size: int
    pointer: int
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> CudaRegion:
        """Raises RuntimeError with CUDA's message when the handle cannot be opened."""
        runtime = cuda_runtime()
        if runtime is None:
            raise RuntimeError("no CUDA runtime")
        with _on_device(device_id):
            pointer = runtime.ipcOpenMemHandle(raw_handle, runtime.cudaIpcMemLazyEnablePeerAccess)
        return cls(name, device_id, byte_size, int(pointer))

    def read(self, offset: int, size: int) -> bytearray:
        """``size`` bytes from ``offset``, copied to host memory."""
        runtime = cuda_runtime()
        host = bytearray(size)
        if size:
            address = np.frombuffer(host, np.uint8).ctypes.data
            with self.lock, _on_device(self._open_id()):
                runtime.memcpy(address, self.pointer + offset, size, runtime.memcpyDeviceToHost)
        return host

    def write(self, offset: int, data: bytes | memoryview) -> None:
        runtime = cuda_runtime()
        host = np.frombuffer(data, np.uint8)
        if host.size:
            with self.lock, _on_device(self._open_id()):
                runtime.memcpy(
                    self.pointer + offset, host.ctypes.data, host.size, runtime.memcpyHostToDevice
                )
                # a copy from pageable memory may return before it lands; the client reads next
                runtime.deviceSynchronize()

    def close(self) -> None:
        runtime = cuda_runtime()
        with self.lock:
            if self.closed:
                return
            self.closed = True
            with _on_device(self.device_id):
                runtime.ipcCloseMemHandle(self.pointer)

    def _open_id(self) -> int:
        """The region's device, after checking (under the lock) that it is still open."""
        if self.closed:
            raise RegionClosedError(f"region '{self.name}' was unregistered")
        return self.device_id

    def status(self) -> dict[str, object]:
        return {"name": self.name, "device_id": self.device_id, "byte_size": self.byte_size}


class _on_device:  # used as a context manager, like cupy.cuda.Device
    """Make ``device_id`` current for a block, restoring the previous device after it."""

    def __init__(self, device_id: int) -> None:
        self.device_id = device_id
        self.previous = -1

    def __enter__(self) -> None:
        runtime = cuda_runtime()
        self.previous = runtime.getDevice()
        if self.previous != self.device_id:
            runtime.setDevice(self.device_id)

    def __exit__(self, *exc: object) -> None:
        if self.previous != self.device_id:
            cuda_runtime().setDevice(self.previous)
