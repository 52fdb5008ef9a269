"""The requests a scheduler holds, and its priority queues.

One queue per priority level (level 1 first), each a FIFO plus a "delayed" FIFO of requests
whose DELAY timeout expired (they run after the level's other requests, as in Triton).
Requests leave a queue lazily: a request taken out of order, rejected or cancelled is only
marked (``Item.where``), and is dropped when it reaches the head.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Generator, Hashable

from accelserve.scheduling.batching import Tensors
from accelserve.scheduling.timers import Cancellable

# Where a request is (``Item.where``).
QUEUED, DELAYED, RUNNING, DONE = 0, 1, 2, 3


class Item:
    """One accepted request while the scheduler holds it."""

    __slots__ = (
        "arrival_ns",
        "arrival_t",
        "deadline",
        "error",
        "future",
        "inputs",
        "length",
        "level",
        "ready",
        "reason",
        "rows",
        "sig",
        "timeout_us",
        "timer",
        "value",
        "where",
    )

    def __init__(
        self,
        inputs: Tensors,
        rows: int,
        sig: Hashable,
        level: int,
        future: asyncio.Future[Tensors],
        arrival_ns: int,
        arrival_t: float,
    ) -> None:
        self.inputs = inputs
        self.length = 0  # tokens, for token-aware batching
        self.rows = rows
        self.sig = sig
        self.level = level  # 0-based queue index
        self.future = future
        self.arrival_ns = arrival_ns  # perf_counter_ns, for statistics
        self.arrival_t = arrival_t  # the scheduler's clock, for delays and deadlines
        self.deadline = math.inf
        self.timeout_us = 0
        self.timer: Cancellable | None = None
        self.where = QUEUED
        # Held result, for preserve_ordering.
        self.ready = False
        self.value: Tensors | None = None
        self.error: BaseException | None = None
        self.reason = ""

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class LevelQueues:
    """The queued requests of every priority level, and how many each level holds."""

    def __init__(self, levels: int, rejects: list[bool]) -> None:
        self.levels = levels
        self._rejects = rejects  # per level: an expired request is rejected (else delayed)
        self._main: list[deque[Item]] = [deque() for _ in range(levels)]
        self._delayed: list[deque[Item]] = [deque() for _ in range(levels)]
        self.sizes = [0] * levels  # queued requests per level (max_queue_size)
        self.queued = 0

    def push(self, item: Item) -> None:
        self._main[item.level].append(item)
        self.sizes[item.level] += 1
        self.queued += 1

    def live(self, now: float, expired: list[Item]) -> Generator[Item, None, None]:
        """The queued requests, highest priority and oldest first (a level's delayed ones after
        its others). Those past their deadline on a REJECT level go to ``expired`` instead:
        their timer has not fired yet. Stop iterating before changing the queues."""
        for level in range(self.levels):
            reject = self._rejects[level]
            self.trim(level)
            for dq, tag in ((self._main[level], QUEUED), (self._delayed[level], DELAYED)):
                for item in dq:
                    if item.where != tag:
                        continue
                    if reject and item.deadline <= now:
                        expired.append(item)
                        continue
                    yield item

    def take(self, batch: list[Item]) -> None:
        """The batch leaves the queues to run."""
        for item in batch:
            item.where = RUNNING
            self.sizes[item.level] -= 1
            item.cancel_timer()
        self.queued -= len(batch)
        for level in {item.level for item in batch}:
            self.trim(level)  # so an idle queue holds no finished request's arrays

    def drop(self, item: Item) -> None:
        """A still-queued item leaves unanswered by a batch (rejected or cancelled)."""
        self.sizes[item.level] -= 1
        self.queued -= 1
        item.cancel_timer()
        item.where = DONE
        self.trim(item.level)

    def delay(self, item: Item) -> None:
        """DELAY timeout: behind the level's requests that have not expired."""
        item.where = DELAYED
        self._delayed[item.level].append(item)

    def trim(self, level: int) -> None:
        """Drop the requests that left a level's queues from their heads."""
        for dq, tag in ((self._main[level], QUEUED), (self._delayed[level], DELAYED)):
            while dq and dq[0].where != tag:
                dq.popleft()

    def rejects(self, level: int) -> bool:
        return self._rejects[level]
