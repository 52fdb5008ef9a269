"""Triton's system shared-memory extension: the registry of regions clients register.

A client creates a POSIX shared-memory object (``shm_open``: ``/dev/shm/<key>`` on Linux),
registers a window of it (key, offset, byte size) under a name, and then names that region, an
offset into it and a byte size in an input's or output's parameters instead of sending the data.
The server maps the object once, at registration (``mmap``), so a request's input is a
read-only array over the client's memory and an output is one copy into it.

Regions are one namespace per server, shared by HTTP and gRPC and by both kinds (Triton's rule):
system regions and CUDA regions (``cuda_shared_memory``: device memory opened from a client's
CUDA IPC handle, only on a server with a GPU and CuPy). Unregistering a system region a request
is still reading leaves the mapping alive until that request's arrays are gone.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from accelserve.cuda_shared_memory import (
    IPC_HANDLE_SIZE,
    CudaRegion,
    RegionClosedError,
    cuda_runtime,
    device_count,
)
from accelserve.errors import AccelServeError, InvalidArgumentError

SHM_ROOT = Path("/dev/shm")  # where shm_open's objects live on Linux


@dataclass(frozen=True, slots=True)
class SharedMemoryRef:
    """What a tensor's parameters name: a region, an offset into it and a byte size."""

    region: str
    offset: int
    byte_size: int


@dataclass(slots=True)
class SystemRegion:
    name: str
    key: str
    offset: int  # into the shared-memory object
    byte_size: int
    mapping: mmap.mmap

    def status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "byte_size": self.byte_size,
        }


class SharedMemoryRegistry:
    """The server's registered regions, by name (safe to use from any thread)."""

    def __init__(self, root: Path = SHM_ROOT) -> None:
        self.root = root
        self._regions: dict[str, SystemRegion] = {}
        self._cuda: dict[str, CudaRegion] = {}
        self._lock = threading.Lock()

    # -- control ------------------------------------------------------------------------------

    def register_system(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not name:
            raise InvalidArgumentError("shared memory region name: expected a non-empty string")
        for field, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(
                    f"shared memory region '{name}' '{field}': expected a non-negative integer; "
                    f"received {value!r}"
                )
        with self._lock:
            self._check_free(name)
        mapping = self._map(name, key, offset, byte_size)
        with self._lock:
            try:
                self._check_free(name)  # registered meanwhile by another request?
            except InvalidArgumentError:
                mapping.close()
                raise
            self._regions[name] = SystemRegion(name, key, offset, byte_size, mapping)

    def _check_free(self, name: str) -> None:
        """Hold the lock. One namespace for both kinds, as in Triton."""
        if name in self._regions:
            raise InvalidArgumentError(
                f"shared memory region '{name}' is already registered (system shared memory, "
                f"key '{self._regions[name].key}'); unregister it first"
            )
        if name in self._cuda:
            raise InvalidArgumentError(
                f"shared memory region '{name}' is already registered (CUDA shared memory, "
                f"device {self._cuda[name].device_id}); unregister it first"
            )

    def unregister_system(self, name: str = "") -> None:
        """Forget region ``name`` (every region when empty); an unknown name is no error,
        as in Triton."""
        with self._lock:
            if name:
                regions = [self._regions.pop(name)] if name in self._regions else []
            else:
                regions = list(self._regions.values())
                self._regions.clear()
        for region in regions:
            # arrays of a request still running hold the mapping: it goes with the last of them
            with contextlib.suppress(BufferError):
                region.mapping.close()

    def system_status(self, name: str = "") -> list[dict[str, object]]:
        with self._lock:
            if not name:
                return [r.status() for r in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise InvalidArgumentError(
                f"Unable to find system shared memory region: '{name}' is not registered"
            )
        return [region.status()]

    def close(self) -> None:
        self.unregister_system()
        self.unregister_cuda()

    # -- CUDA shared memory -------------------------------------------------------------------

    def register_cuda(self, name: str, raw_handle: bytes, device_id: int, byte_size: int) -> None:
        """Open a client's CUDA IPC handle as region ``name``: every argument is checked first,
        then that this server has a GPU (CuPy and a device) to open it with."""
        if not name:
            raise InvalidArgumentError("shared memory region name: expected a non-empty string")
        with self._lock:
            self._check_free(name)
        if len(raw_handle) != IPC_HANDLE_SIZE:
            raise InvalidArgumentError(
                f"CUDA shared memory region '{name}' 'raw_handle': expected a CUDA IPC memory "
                f"handle of {IPC_HANDLE_SIZE} bytes (cudaIpcGetMemHandle's); received "
                f"{len(raw_handle)} bytes"
            )
        for field, value, least in (("device_id", device_id, 0), ("byte_size", byte_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                expected = "a non-negative integer" if least == 0 else "a positive integer"
                raise InvalidArgumentError(
                    f"CUDA shared memory region '{name}' '{field}': expected {expected}; "
                    f"received {value!r}"
                )
        if cuda_runtime() is None:
            raise self.cuda_unsupported(name)
        devices = device_count()
        if device_id >= devices:
            raise InvalidArgumentError(
                f"CUDA shared memory region '{name}' 'device_id': expected a GPU of this server "
                f"(0 to {devices - 1}); received {device_id}"
            )
        try:
            region = CudaRegion.open(name, raw_handle, device_id, byte_size)
        except Exception as exc:  # CUDA's own error: a stale, foreign or same-process handle
            raise InvalidArgumentError(
                f"Unable to open CUDA shared memory region '{name}' on device {device_id}: "
                f"the raw_handle is no CUDA IPC handle this server can open ({exc})"
            ) from None
        with self._lock:
            try:
                self._check_free(name)
            except InvalidArgumentError:
                region.close()
                raise
            self._cuda[name] = region

    def unregister_cuda(self, name: str = "") -> None:
        """Close CUDA region ``name`` (every CUDA region when empty); an unknown name is no
        error, as in Triton."""
        with self._lock:
            if name:
                regions = [self._cuda.pop(name)] if name in self._cuda else []
            else:
                regions = list(self._cuda.values())
                self._cuda.clear()
        for region in regions:
            region.close()

    def cuda_status(self, name: str = "") -> list[dict[str, object]]:
        with self._lock:
            if not name:
                return [r.status() for r in self._cuda.values()]
            region = self._cuda.get(name)
        if region is None:
            raise InvalidArgumentError(
                f"Unable to find CUDA shared memory region: '{name}' is not registered"
            )
        return [region.status()]

    @staticmethod
    def cuda_unsupported(name: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"CUDA shared memory region '{name}': CUDA shared memory needs a GPU on the server "
            f"(and CuPy to open CUDA IPC handles); this server has none. Use system shared "
            f"memory (/v2/systemsharedmemory) or send the data in the request"
        )

    # -- data ---------------------------------------------------------------------------------

    def read(self, tensor: str, ref: SharedMemoryRef) -> tuple[mmap.mmap | bytearray, int]:
        """A buffer that holds ``ref``'s bytes and where they start in it (a system region's
        mapping itself; a CUDA region's bytes copied to the host); a clear error for an unknown
        region or a window that does not fit in it."""
        region = self._region(tensor, ref)
        if isinstance(region, CudaRegion):
            try:
                return region.read(ref.offset, ref.byte_size), 0
            except RegionClosedError:
                raise _unregistered(tensor, ref) from None
            except Exception as exc:  # a CUDA error: the server's, not the request's
                raise _copy_failed(tensor, "from", ref, exc) from None
        return region.mapping, region.offset + ref.offset

    def write(self, tensor: str, ref: SharedMemoryRef, data: bytes | memoryview) -> None:
        """Copy ``data`` (at most ``ref.byte_size`` bytes) to the start of ``ref``'s window."""
        region = self._region(tensor, ref)
        if isinstance(region, CudaRegion):
            try:
                region.write(ref.offset, data)
            except RegionClosedError:
                raise _unregistered(tensor, ref) from None
            except Exception as exc:
                raise _copy_failed(tensor, "into", ref, exc) from None
        else:
            start = region.offset + ref.offset
            region.mapping[start : start + len(data)] = data

    def _region(self, tensor: str, ref: SharedMemoryRef) -> SystemRegion | CudaRegion:
        with self._lock:
            region: SystemRegion | CudaRegion | None = self._regions.get(ref.region)
            if region is None:
                region = self._cuda.get(ref.region)
        if region is None:
            raise InvalidArgumentError(
                f"{tensor}: shared memory region '{ref.region}' is not registered; register it "
                f"first (/v2/systemsharedmemory/region/{ref.region}/register, or "
                f"/v2/cudasharedmemory/... for GPU memory)"
            )
        if ref.offset + ref.byte_size > region.byte_size:
            raise InvalidArgumentError(
                f"{tensor}: shared memory offset {ref.offset} + byte size {ref.byte_size} = "
                f"{ref.offset + ref.byte_size} runs past the end of region '{ref.region}', "
                f"which has {region.byte_size} bytes"
            )
        return region

    def _map(self, name: str, key: str, offset: int, byte_size: int) -> mmap.mmap:
        # A key is one shm_open name: "/name" or "name", never a path elsewhere.
        base = key[1:] if key.startswith("/") else key
        if not base or "/" in base or base in (".", ".."):
            raise InvalidArgumentError(
                f"shared memory region '{name}' 'key': expected a shared-memory object's name "
                f"such as '/input_data' (one path component); received {key!r}"
            )
        path = self.root / base
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise InvalidArgumentError(
                f"Unable to open shared memory region '{name}': key '{key}' names no "
                f"shared-memory object this server can open ({exc.strerror})"
            ) from None
        try:
            size = os.fstat(fd).st_size
            if offset + byte_size > size:
                raise InvalidArgumentError(
                    f"shared memory region '{name}': offset {offset} + byte_size {byte_size} = "
                    f"{offset + byte_size} runs past the end of '{key}', which has {size} bytes"
                )
            if size == 0:
                raise InvalidArgumentError(
                    f"shared memory region '{name}': '{key}' is empty (0 bytes); expected an "
                    f"object of at least {byte_size} bytes"
                )
            return mmap.mmap(fd, size)
        finally:
            os.close(fd)


def _copy_failed(
    tensor: str, direction: str, ref: SharedMemoryRef, exc: Exception
) -> AccelServeError:
    return AccelServeError(
        f"{tensor}: copying {direction} CUDA shared memory region '{ref.region}' failed: {exc}"
    )


def _unregistered(tensor: str, ref: SharedMemoryRef) -> InvalidArgumentError:
    return InvalidArgumentError(
        f"{tensor}: shared memory region '{ref.region}' was unregistered while the request "
        f"was using it"
    )
