"""Fixture that builds schedulers around test backends and closes their instances."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sched_helpers import Build

from accelserve.backends.base import Backend
from accelserve.scheduling import BatchingPolicy, Clock, ModelInstance, Scheduler
from accelserve.stats import ModelStats


@pytest.fixture
def build() -> Iterator[Build]:
    """``build(policy, *backends, clock=None, default_max_queue_size=0)`` -> Scheduler over one instance per backend."""
    made: list[ModelInstance[Backend]] = []

    def make(
        policy: BatchingPolicy,
        *backends: Backend,
        clock: Clock | None = None,
        default_max_queue_size: int = 0,
    ) -> Scheduler:
        instances = [ModelInstance(f"m_{i}", b) for i, b in enumerate(backends)]
        made.extend(instances)
        stats = ModelStats("m", "1")
        return Scheduler(
            "m",
            policy,
            instances,
            stats,
            clock=clock,
            default_max_queue_size=default_max_queue_size,
        )

    yield make
    for instance in made:
        instance.close()
