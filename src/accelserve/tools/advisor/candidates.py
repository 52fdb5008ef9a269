"""What ``accelserve advise`` searches over and decides with: the candidate configs, their
measurements, the recommendation rule and how a candidate rewrites a model's config."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from accelserve.devices import Device
    from accelserve.protocol.model_config_pb2 import ModelConfig
    from accelserve.tools.bench.inputs import ModelInfo
    from accelserve.tools.bench.runner import StepResult

DEFAULT_BATCH_SIZES = (1, 8, 32)


@dataclass(frozen=True, slots=True)
class Candidate:
    device: Device
    batch_size: int  # preferred (and largest) batch the scheduler forms; 1 for a non-batching model
    instances: int
    request_rows: int = 1  # rows in each request (0: the model does not batch)

    @property
    def concurrency(self) -> int:
        """Clients enough to fill every instance's batch."""
        rows = max(1, self.request_rows)
        return math.ceil(self.batch_size / rows) * self.instances

    @property
    def label(self) -> str:
        return f"{self.device} batch {self.batch_size} x {self.instances} instance(s)"


@dataclass(slots=True)
class Measurement:
    candidate: Candidate
    result: StepResult | None = None
    error: str = ""  # the candidate could not be loaded or run

    @property
    def ok(self) -> bool:
        r = self.result
        return not self.error and r is not None and r.failed == 0 and r.ok > 0

    @property
    def throughput(self) -> float:
        return self.result.throughput if self.result is not None else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.throughput * max(1, self.candidate.request_rows)

    @property
    def p50_ms(self) -> float:
        return self.result.latency.p50 * 1e3 if self.result is not None else math.nan

    @property
    def p99_ms(self) -> float:
        return self.result.latency.p99 * 1e3 if self.result is not None else math.nan

    @property
    def avg_batch(self) -> float:
        server = self.result.server if self.result is not None else None
        return server.avg_batch if server is not None else math.nan

    def meets(self, p99_ms: float | None) -> bool:
        return self.ok and (p99_ms is None or self.p99_ms <= p99_ms)


def recommend(
    measurements: Sequence[Measurement], p99_ms: float | None
) -> tuple[Measurement | None, bool]:
    """(choice, meets objective): the highest throughput among the candidates with no failure
    and p99 within the objective; else the lowest-p99 candidate that ran, with False."""
    meeting = [m for m in measurements if m.meets(p99_ms)]
    if meeting:
        return max(meeting, key=lambda m: m.throughput), True
    ran = [m for m in measurements if m.ok]
    if ran:
        return min(ran, key=lambda m: m.p99_ms), False
    return None, False


@dataclass
class Target:
    model_dir: Path
    config: ModelConfig  # completed from the model file
    original: ModelConfig | None  # config.pbtxt as written, None when the model has none
    info: ModelInfo


def apply_candidate(config: ModelConfig, candidate: Candidate) -> ModelConfig:
    """A copy of ``config`` with the candidate's batching and instance fields; the rest kept."""
    from accelserve.protocol.model_config_pb2 import ModelConfig, ModelInstanceGroup

    out = ModelConfig()
    out.CopyFrom(config)
    # A model batching by token count (max_batch_tokens) forms its own batch sizes.
    if out.max_batch_size > 0 and "max_batch_tokens" not in out.parameters:
        out.dynamic_batching.preferred_batch_size[:] = [candidate.batch_size]
    del out.instance_group[:]
    group = out.instance_group.add(count=candidate.instances)
    kind = candidate.device.kind
    if kind == "cuda":
        group.kind = ModelInstanceGroup.KIND_GPU
        group.gpus.append(candidate.device.index)
    elif kind == "cpu":
        group.kind = ModelInstanceGroup.KIND_CPU
    else:  # a TPU: the model places itself on the server's --device
        group.kind = ModelInstanceGroup.KIND_MODEL
    return out
