"""Per-model-version statistics in Triton's shape (``/v2/models/{m}/stats``).

Counters are plain ints updated on the event loop thread (or under the GIL from an instance
thread: each update is one attribute add, and a rare lost update would only skew a counter, not
corrupt a response). The Prometheus endpoint reads these same objects at scrape time, so
counting costs the hot path a few additions and nothing more.

Latency histograms (request, queue and compute-infer durations) are off until the metrics
endpoint turns them on with ``enable_histograms``: then those three ``Duration``s become
``Histogram``s, which also count each observation into a bucket (one ``bisect`` on a short
tuple), and models loaded later get them too.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from accelserve.errors import AccelServeError, ErrorCode, ModelExecutionError

# Upper bounds of the latency buckets in milliseconds (Prometheus "le"), when not configured.
DEFAULT_LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
)  # fmt: skip
HISTOGRAM_FIELDS = ("success", "queue", "compute_infer")
# Triton's failure reasons (the ``reason`` label of nv_inference_request_failure): REJECTED, the
# server refused the request before running it (invalid input, queue full, too large);
# CANCELED, the client went away (disconnected, cancelled, past its gRPC deadline); BACKEND,
# the model's execution failed; OTHER, anything else (queue timeout, a model not READY, ...).
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")
_REJECTED_CODES = frozenset(
    {
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.NOT_FOUND,
        ErrorCode.TOO_LARGE,
        ErrorCode.RESOURCE_EXHAUSTED,
        ErrorCode.UNAUTHENTICATED,
        ErrorCode.PERMISSION_DENIED,
    }
)
_histogram_bounds_ns: tuple[int, ...] | None = None  # set by enable_histograms


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class Histogram(Duration):
    """A Duration that also counts each observation into a latency bucket."""

    bounds_ns: tuple[int, ...] = ()  # increasing upper bounds; the last bucket is +Inf
    buckets: list[int] = field(default_factory=list)  # per bucket, not cumulative

    def __post_init__(self) -> None:
        if len(self.buckets) != len(self.bounds_ns) + 1:
            self.buckets = [0] * (len(self.bounds_ns) + 1)

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le semantics)
        self.buckets[bisect_left(self.bounds_ns, ns if count == 1 else ns // count)] += count

    @classmethod
    def from_duration(cls, duration: Duration, bounds_ns: tuple[int, ...]) -> Histogram:
        """Keeps the totals; observations made before have no bucket, so they count as +Inf
        (the histogram's count must equal its +Inf bucket)."""
        histogram = cls(duration.count, duration.ns, bounds_ns)
        histogram.buckets[-1] = duration.count
        return histogram


def failure_reason(exc: BaseException) -> str:
    """The failure reason under which a request that raised ``exc`` is counted."""
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(exc, ModelExecutionError):
        return "BACKEND"
    if isinstance(exc, AccelServeError) and exc.code in _REJECTED_CODES:
        return "REJECTED"
    return "OTHER"


def bounds_ns(buckets_ms: Sequence[float]) -> tuple[int, ...]:
    """Validated bucket bounds: milliseconds -> nanoseconds."""
    values = [float(b) for b in buckets_ms]
    if not values or any(not 0 < b < float("inf") for b in values):
        raise ValueError(
            f"latency buckets: expected one or more positive, finite milliseconds; received "
            f"{list(buckets_ms)}"
        )
    if any(b >= c for b, c in pairwise(values)):
        raise ValueError(f"latency buckets: expected increasing values; received {values}")
    return tuple(round(b * 1_000_000) for b in values)


def enable_histograms(buckets_ms: Sequence[float] = DEFAULT_LATENCY_BUCKETS_MS) -> tuple[int, ...]:
    """Make every ModelStats created from now on keep latency histograms; returns the bounds
    in nanoseconds (for ``ModelStats.enable_histograms`` on the existing ones)."""
    global _histogram_bounds_ns
    _histogram_bounds_ns = bounds_ns(buckets_ms)
    return _histogram_bounds_ns


def disable_histograms() -> None:
    global _histogram_bounds_ns
    _histogram_bounds_ns = None


@dataclass(slots=True)
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


CustomFamily = tuple[str, str, dict[tuple[tuple[str, str], ...], float]]


@dataclass(slots=True)
class ModelStats:
    name: str
    version: str
    inference_count: int = 0  # rows inferred (a request of batch 4 counts 4)
    execution_count: int = 0  # batches run by backends
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    fail_reasons: dict[str, int] = field(default_factory=dict)  # reason -> count
    batch: dict[int, BatchStats] = field(default_factory=dict)  # batch size -> stats
    pending: int = 0  # requests accepted and not yet answered
    # Backend calls re-run to find the requests that failed a batch (scheduling.isolation);
    # "isolation_retry_count" in /stats (accelserve's own field, not Triton's).
    isolation_retries: int = 0
    # Metrics the model defines itself (Triton's pb_utils.MetricFamily), exported on /metrics:
    # family name -> (kind "counter" or "gauge", help text, {labels: value}).
    custom: dict[str, CustomFamily] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if _histogram_bounds_ns is not None:
            self.enable_histograms(_histogram_bounds_ns)

    def enable_histograms(self, bounds: tuple[int, ...]) -> None:
        """Swap the request, queue and compute-infer Durations for Histograms (the scheduler
        looks the fields up on each update, so it counts into the new objects at once)."""
        for name in HISTOGRAM_FIELDS:
            current = getattr(self, name)
            if not (isinstance(current, Histogram) and current.bounds_ns == bounds):
                setattr(self, name, Histogram.from_duration(current, bounds))

    def record_failure(self, reason: str, ns: int) -> None:
        self.fail.add(ns)
        self.fail_reasons[reason] = self.fail_reasons.get(reason, 0) + 1

    def record_batch(self, size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One backend execution of ``size`` rows (the three compute phases)."""
        self.execution_count += 1
        stats = self.batch.get(size)
        if stats is None:
            stats = self.batch[size] = BatchStats()
        stats.compute_input.add(input_ns)
        stats.compute_infer.add(infer_ns)
        stats.compute_output.add(output_ns)

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "isolation_retry_count": self.isolation_retries,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": s.compute_input.as_dict(),
                    "compute_infer": s.compute_infer.as_dict(),
                    "compute_output": s.compute_output.as_dict(),
                }
                for size, s in sorted(self.batch.items())
            ],
        }
