"""Triton's system shared-memory extension: the registry of regions clients register.

A client creates a POSIX shared-memory object (``shm_open``: ``/dev/shm/<key>`` on Linux),
registers a window of it (key, offset, byte size) under a name, and then names that region, an
offset into it and a byte size in an input's or output's parameters instead of sending the data.
The server maps the object once, at registration (``mmap``), so a request's input is a
read-only array over the client's memory and an output is one copy into it.

Regions are one namespace per server, shared by HTTP and gRPC (Triton's rule: the CUDA regions
share it too; this server has none, see ``register_cuda``). Unregistering a region a request is
still reading leaves the mapping alive until that request's arrays are gone.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from accelserve.errors import InvalidArgumentError

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
            if name in self._regions:
                raise InvalidArgumentError(
                    f"shared memory region '{name}' is already registered (key "
                    f"'{self._regions[name].key}'); unregister it first"
                )
        mapping = self._map(name, key, offset, byte_size)
        with self._lock:
            if name in self._regions:  # registered meanwhile by another request
                mapping.close()
                raise InvalidArgumentError(f"shared memory region '{name}' is already registered")
            self._regions[name] = SystemRegion(name, key, offset, byte_size, mapping)

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

    # -- CUDA shared memory: not served by this server ----------------------------------------

    @staticmethod
    def cuda_unsupported(name: str = "") -> InvalidArgumentError:
        what = f"region '{name}'" if name else "regions"
        return InvalidArgumentError(
            f"CUDA shared memory {what}: CUDA shared memory is not supported on this server; "
            f"use system shared memory (/v2/systemsharedmemory) or send the data in the request"
        )

    # -- data ---------------------------------------------------------------------------------

    def buffer(self, tensor: str, ref: SharedMemoryRef) -> tuple[mmap.mmap, int]:
        """The mapping that holds ``ref``'s bytes and where they start in it; a clear error
        for an unknown region or a window that does not fit in it."""
        with self._lock:
            region = self._regions.get(ref.region)
        if region is None:
            raise InvalidArgumentError(
                f"{tensor}: shared memory region '{ref.region}' is not registered; register it "
                f"first (/v2/systemsharedmemory/region/{ref.region}/register)"
            )
        if ref.offset + ref.byte_size > region.byte_size:
            raise InvalidArgumentError(
                f"{tensor}: shared memory offset {ref.offset} + byte size {ref.byte_size} = "
                f"{ref.offset + ref.byte_size} runs past the end of region '{ref.region}', "
                f"which has {region.byte_size} bytes"
            )
        return region.mapping, region.offset + ref.offset

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
