"""Server-side breakdown from two snapshots of Triton-shaped statistics (``/stats``).

Works on the HTTP JSON form and on the gRPC message turned into a dict (where 64-bit counters
arrive as strings and zero fields are omitted), so every value goes through ``int()`` with a
default of 0. Versions of the model are summed: the load generator addresses the model, and the
server picks the version.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Counters summed over the model's versions: ``{phase: (count, ns)}`` plus row counts."""

    inference_count: int
    execution_count: int
    phases: Mapping[str, tuple[int, int]]


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def snapshot(stats: Mapping[str, Any], model: str, version: str = "") -> StatsSnapshot:
    """Extract ``model`` (and ``version`` when given) from a ``model_stats`` response.

    Raises ValueError when the response does not list the model, so a wrong name is not
    reported as zero traffic.
    """
    entries = [
        e
        for e in stats.get("model_stats", ())
        if e.get("name") == model and (not version or str(e.get("version", "")) == version)
    ]
    if not entries:
        names = sorted({str(e.get("name")) for e in stats.get("model_stats", ())})
        wanted = f"{model!r}" + (f" version {version!r}" if version else "")
        raise ValueError(f"statistics do not list model {wanted}; they list {names}")
    phases: dict[str, tuple[int, int]] = {}
    for phase in PHASES:
        count = ns = 0
        for e in entries:
            d = e.get("inference_stats", {}).get(phase, {})
            count += _int(d.get("count"))
            ns += _int(d.get("ns"))
        phases[phase] = (count, ns)
    return StatsSnapshot(
        inference_count=sum(_int(e.get("inference_count")) for e in entries),
        execution_count=sum(_int(e.get("execution_count")) for e in entries),
        phases=phases,
    )


@dataclass(frozen=True, slots=True)
class ServerDelta:
    """What the server counted between two snapshots; times are averages per request in us."""

    requests: int  # success.count delta
    failed: int  # fail.count delta
    inferences: int  # rows (a request of batch 4 counts 4)
    executions: int  # batches the backend ran
    request_us: float  # server-side time of a successful request, end to end
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float

    @property
    def total(self) -> int:
        return self.requests + self.failed

    @property
    def avg_batch(self) -> float:
        return self.inferences / self.executions if self.executions else math.nan

    @property
    def overhead_us(self) -> float:
        """Server time not in queue or compute (protocol handling, scheduling)."""
        parts = self.queue_us + self.compute_input_us + self.compute_infer_us
        return self.request_us - parts - self.compute_output_us


def delta(before: StatsSnapshot, after: StatsSnapshot) -> ServerDelta:
    def avg_us(phase: str) -> float:
        count = after.phases[phase][0] - before.phases[phase][0]
        ns = after.phases[phase][1] - before.phases[phase][1]
        return ns / count / 1e3 if count > 0 else math.nan

    return ServerDelta(
        requests=after.phases["success"][0] - before.phases["success"][0],
        failed=after.phases["fail"][0] - before.phases["fail"][0],
        inferences=after.inference_count - before.inference_count,
        executions=after.execution_count - before.execution_count,
        request_us=avg_us("success"),
        queue_us=avg_us("queue"),
        compute_input_us=avg_us("compute_input"),
        compute_infer_us=avg_us("compute_infer"),
        compute_output_us=avg_us("compute_output"),
    )
