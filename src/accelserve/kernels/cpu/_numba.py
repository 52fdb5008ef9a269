"""Lazy numba compilation and the thread policy of the ``cpu`` provider.

Kernels are written with ``prange`` and compiled ``parallel=True`` on first call. Each call
picks its thread count: small work always runs on one thread; larger work on
``ACCELSERVE_CPU_THREADS`` threads if set (read once, at the first large call), else all of
numba's threads on hosts with more than two cores and one thread on hosts with two or fewer. (The count stays set for the calling thread, as numba's setting is thread-local.)

Why one thread on tiny hosts: a static split over both cores of a busy 2-vCPU VM waits for
the slower core, and measured here that turned a 0.1 ms row reduction into 8 ms stalls
whenever another process held the second core; one core alone already streams from cache
several times faster than NumPy. A server on such a host parallelizes across requests.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

# No nnan/ninf: NaN and Inf must propagate exactly as in the reference. reassoc lets the
# compiler vectorize sums with several accumulators; arcp lets it multiply by a reciprocal.
FASTMATH = {"reassoc", "contract", "arcp"}
PARALLEL_MIN_BYTES = 1 << 18  # below this, one thread
ENV_THREADS = "ACCELSERVE_CPU_THREADS"

_lock = threading.Lock()
F = TypeVar("F", bound=Callable[..., Any])


def quiet(fn: F) -> F:
    """NaN and Inf are valid inputs: NumPy must not warn about them (tests run with -W error)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class LazyKernel:
    """A numba kernel compiled (parallel, cached) the first time it is called."""

    def __init__(self, fn: Callable[..., Any], parallel: bool = True) -> None:
        self.fn = fn
        self.parallel = parallel
        self._compiled: Any = None

    def compiled(self) -> Any:
        if self._compiled is None:
            with _lock:
                if self._compiled is None:
                    import numba

                    self._compiled = numba.njit(
                        parallel=self.parallel, fastmath=FASTMATH, cache=True, nogil=True
                    )(self.fn)
        return self._compiled

    def __call__(self, *args: Any, work_bytes: int) -> Any:
        kernel = self.compiled()
        _use_threads(threads_for(work_bytes, _max_threads()))
        return kernel(*args)


_local = threading.local()


@functools.cache
def _max_threads() -> int:
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]  # the pool size


def _use_threads(n: int) -> None:
    """Set numba's (thread-local) thread count for this calling thread, skipping the call when
    it is already set: numba.set_num_threads takes a lock and costs microseconds."""
    if getattr(_local, "threads", None) != n:
        import numba

        numba.set_num_threads(n)
        _local.threads = n


def kernel(fn: Callable[..., Any]) -> LazyKernel:
    return LazyKernel(fn)


def threads_for(work_bytes: int, available: int) -> int:
    return 1 if work_bytes < PARALLEL_MIN_BYTES else _large_work_threads(available)


@functools.cache
def _large_work_threads(available: int) -> int:
    # Decided once per process: os.cpu_count() reads /sys and os.environ is a mapping lookup,
    # a few microseconds a call that a one-row request would pay on every kernel.
    cap = os.environ.get(ENV_THREADS)
    if cap:
        try:
            return max(1, min(available, int(cap)))
        except ValueError:
            pass
    return available if (os.cpu_count() or 1) > 2 else 1


def compute_dtype(x: np.ndarray) -> np.dtype:
    """float64 stays float64; everything else (16-bit included) is computed in float32."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def contiguous(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A C-contiguous array of ``dtype`` (no copy when ``x`` already is one)."""
    return np.ascontiguousarray(x, dtype=dtype)
