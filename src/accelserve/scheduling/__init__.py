"""Scheduling: per-model queues, Triton's dynamic batcher and instance groups.

Backends arrive here already loaded (wrapped in ``ModelInstance``); nothing in this package
imports a framework.
"""

from __future__ import annotations

from accelserve.scheduling.batching import batch_signature, merge_inputs, split_outputs
from accelserve.scheduling.instances import ModelInstance
from accelserve.scheduling.policy import BatchingPolicy, QueuePolicy
from accelserve.scheduling.scheduler import Scheduler

__all__ = [
    "BatchingPolicy",
    "ModelInstance",
    "QueuePolicy",
    "Scheduler",
    "batch_signature",
    "merge_inputs",
    "split_outputs",
]
