"""Scheduling: per-model queues, Triton's dynamic batcher and instance groups.

Backends arrive here already loaded (wrapped in ``ModelInstance``), seen only through the
``Engine`` protocol; nothing in this package imports a framework or a backend, and it keeps no
process-wide state (``CoreActivity`` is made once per server and passed in).
"""

from __future__ import annotations

from accelserve.scheduling.activity import CoreActivity
from accelserve.scheduling.batching import batch_signature, merge_inputs, split_outputs
from accelserve.scheduling.instances import Engine, ModelInstance
from accelserve.scheduling.policy import BatchingPolicy, QueuePolicy
from accelserve.scheduling.scheduler import Scheduler
from accelserve.scheduling.timers import Clock

__all__ = [
    "BatchingPolicy",
    "Clock",
    "CoreActivity",
    "Engine",
    "ModelInstance",
    "QueuePolicy",
    "Scheduler",
    "batch_signature",
    "merge_inputs",
    "split_outputs",
]
