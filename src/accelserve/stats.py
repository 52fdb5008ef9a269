"""Per-model-version statistics in Triton's shape (``/v2/models/{m}/stats``).

Counters are plain ints updated on the event loop thread (or under the GIL from an instance
thread: each update is one attribute add, and a rare lost update would only skew a counter, not
corrupt a response). The Prometheus endpoint reads these same objects at scrape time, so
counting costs the hot path a few additions and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


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
