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
    """``build(policy, *backends, clock=None)`` -> Scheduler over one instance per backend."""
    made: list[ModelInstance[Backend]] = []

    def make(policy: BatchingPolicy, *backends: Backend, clock: Clock | None = None) -> Scheduler:
        instances = [ModelInstance(f"m_{i}", b) for i, b in enumerate(backends)]
        made.extend(instances)
        return Scheduler("m", policy, instances, ModelStats("m", "1"), clock=clock)

    yield make
    for instance in made:
        instance.close()
