"""Timing, roofline and array helpers shared by the kernel benchmarks.

Every number is a percentile over several timed runs (p20/p50/p80) after warm-up. On CPU the
functions of one comparison (ours, the vendor's, and a plain copy for memory-bound ops) run in
round-robin, so that load from other processes on a shared machine hits all of them alike.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelserve.kernels.testing import random_array

Entry = tuple[str, str, Callable[[], Any]]  # (case, provider, function)


@dataclass
class Measurement:
    op: str
    case: str
    provider: str
    shape: str
    dtype: str
    p20_ms: float
    p50_ms: float
    p80_ms: float
    metric: str  # "GFLOP/s" or "GB/s"
    value: float
    peak: float | None  # the roofline ceiling the value is compared with
    peak_name: str
    baseline: str = ""
    baseline_p50_ms: float | None = None
    note: str = ""

    @property
    def fraction(self) -> float | None:
        return self.value / self.peak if self.peak else None

    @property
    def speedup(self) -> float | None:
        return self.baseline_p50_ms / self.p50_ms if self.baseline_p50_ms else None


@dataclass
class Context:
    device: str  # "cpu" | "cuda" | "tpu"
    quick: bool = False
    peak_flops: float | None = None
    tiny: bool = False  # a dry run (scripts/device_check.py): each module's "tiny" shapes
    # The CUDA run's code on the CPU: torch CPU tensors, which the dispatcher hands to Triton's
    # interpreter (TRITON_INTERPRET=1), timed on the host clock. For the dry run only.
    emulated: bool = False

    @property
    def key(self) -> str:
        """The row of a bench module's per-device tables (SHAPES, DTYPES) this run uses."""
        return "tiny" if self.tiny else self.device

    def array(self, shape: tuple[int, ...], dtype: str, seed: int = 0, scale: float = 1.0) -> Any:
        return self.put(random_array(shape, dtype, seed, scale))

    def put(self, host: np.ndarray) -> Any:
        if self.device == "cuda":
            from accelserve.kernels._arrays import to_torch

            tensor = to_torch(host)
            return tensor if self.emulated else tensor.cuda()
        if self.device == "tpu":
            import jax

            return jax.device_put(host, jax.devices("tpu")[0])
        return host

    def time_many(self, fns: list[Callable[[], Any]]) -> list[tuple[float, float, float]]:
        """(p20, p50, p80) in milliseconds for each function."""
        if self.device == "cuda" and not self.emulated:
            import triton.testing

            out = []
            for fn in fns:
                q = triton.testing.do_bench(fn, warmup=25, rep=200, quantiles=[0.2, 0.5, 0.8])
                out.append((float(q[0]), float(q[1]), float(q[2])))
            return out
        sync = _block if self.device == "tpu" else _identity
        once = []
        for fn in fns:
            for _ in range(2):
                sync(fn())
            start = time.perf_counter()
            sync(fn())
            once.append(time.perf_counter() - start)
        budget = 0.3 if self.quick else 1.5
        fewest = 3 if self.emulated else 9  # interpreted kernels: the code ran, time is moot
        rounds = int(min(60, max(fewest, budget / max(sum(once), 1e-6))))
        samples: list[list[float]] = [[] for _ in fns]
        for _ in range(rounds):
            for fn, bucket in zip(fns, samples, strict=True):
                start = time.perf_counter()
                sync(fn())
                bucket.append((time.perf_counter() - start) * 1e3)
        out = []
        for bucket in samples:
            q = statistics.quantiles(bucket, n=10)
            out.append((q[1], statistics.median(bucket), q[7]))
        return out

    def _copy_fn(self, like: Any) -> Callable[[], Any]:
        """A plain copy of ``like``'s bytes into a preallocated buffer: the roofline."""
        if self.device == "cuda":
            dst = like.clone()
            return lambda: dst.copy_(like)
        if self.device == "tpu":
            import jax

            copy = jax.jit(lambda x: x + 0)
            return lambda: copy(like)
        dst = np.empty_like(like)
        return lambda: np.copyto(dst, like)

    def group(
        self,
        op: str,
        shape: tuple[int, ...],
        dtype: str,
        ours: Sequence[Entry],
        vendor: Sequence[Entry],
        *,
        flops: float | None = None,
        nbytes: int | None = None,
        copy_of: Any = None,
        note: str = "",
    ) -> list[Measurement]:
        """Time our entries and the vendor's in the same rounds; the first vendor entry is the
        baseline of ours. Memory-bound groups (``nbytes`` moved per call) also time a copy of
        ``copy_of`` in those rounds: its read + write bandwidth is the ceiling."""
        entries = [*ours, *vendor]
        fns = [fn for _, _, fn in entries]
        if nbytes is not None:
            fns.append(self._copy_fn(copy_of))
        times = self.time_many(fns)
        ceiling: float | None
        if nbytes is not None:
            copy_ms = times.pop()[1]
            ceiling = 2 * nbytes_of(copy_of) / (copy_ms * 1e-3) / 1e9
            metric, work, peak_name = "GB/s", float(nbytes), "copy GB/s"
        else:
            assert flops is not None
            ceiling = self.peak_flops / 1e9 if self.peak_flops else None
            metric, work, peak_name = "GFLOP/s", flops, "peak FLOP/s"
        label = "x".join(map(str, shape))
        rows = [
            Measurement(
                op, case, provider, label, dtype, p20, p50, p80,
                metric, work / (p50 * 1e-3) / 1e9, ceiling, peak_name, note=note,
            )
            for (case, provider, _), (p20, p50, p80) in zip(entries, times, strict=True)
        ]  # fmt: skip
        if vendor:
            base = rows[len(ours)]
            for m in rows[: len(ours)]:
                m.baseline, m.baseline_p50_ms = base.provider, base.p50_ms
        return rows


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run the ``cpu`` provider's kernels on ``n`` threads (ACCELSERVE_CPU_THREADS)."""
    old = os.environ.get("ACCELSERVE_CPU_THREADS")
    os.environ["ACCELSERVE_CPU_THREADS"] = str(n)
    try:
        yield
    finally:
        if old is None:
            del os.environ["ACCELSERVE_CPU_THREADS"]
        else:
            os.environ["ACCELSERVE_CPU_THREADS"] = old


def with_threads(n: int, fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run on ``n`` cpu-provider threads, whatever the default policy."""

    def call() -> Any:
        with cpu_threads(n):
            return fn()

    return call


def all_threads() -> int:
    return os.cpu_count() or 1


def _identity(x: Any) -> Any:
    return x


def _block(x: Any) -> Any:
    return x.block_until_ready() if hasattr(x, "block_until_ready") else x


def nbytes_of(*arrays: Any) -> int:
    total = 0
    for a in arrays:
        total += int(a.numel() * a.element_size()) if hasattr(a, "element_size") else int(a.nbytes)
    return total


def vendor_name(device: str) -> str:
    return {"cpu": "numpy", "cuda": "torch", "tpu": "jnp"}[device]
