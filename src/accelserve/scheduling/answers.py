"""Answering a scheduler's requests: now, or in arrival order under ``preserve_ordering``, and
counted in the model's statistics."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from accelserve.scheduling.batching import Tensors
from accelserve.scheduling.queues import DONE, Item
from accelserve.stats import ModelStats

_NS = time.perf_counter_ns


class Answers:
    """Resolves requests' futures and counts the requests accepted and not yet answered."""

    def __init__(self, stats: ModelStats, preserve_ordering: bool) -> None:
        self.stats = stats
        self.pending = 0
        # Every accepted request in arrival order, under preserve_ordering.
        self._order: deque[Item] | None = deque() if preserve_ordering else None
        self._drained: asyncio.Event | None = None

    def accept(self, item: Item) -> None:
        self.pending += 1
        self.stats.pending += 1
        if self._order is not None:
            self._order.append(item)

    def complete(
        self, item: Item, value: Tensors | None, error: BaseException | None, reason: str
    ) -> None:
        """An executed request's answer: now, or in arrival order under preserve_ordering."""
        if self._order is None:
            self._resolve(item, value, error, reason)
            return
        item.value, item.error, item.reason, item.ready = value, error, reason, True
        self._release()

    def fail_now(self, item: Item, error: BaseException | None, reason: str) -> None:
        """A request that never ran (rejected or cancelled) is answered at once, out of band."""
        self._resolve(item, None, error, reason)
        if self._order is not None:
            self._release()

    async def drained(self) -> None:
        """Return once every accepted request has been answered."""
        if self.pending:
            if self._drained is None:
                self._drained = asyncio.Event()
            await self._drained.wait()

    def _release(self) -> None:
        order = self._order
        assert order is not None
        while order:
            head = order[0]
            if head.where != DONE:
                if not head.ready:
                    return
                self._resolve(head, head.value, head.error, head.reason)
            order.popleft()

    def _resolve(
        self, item: Item, value: Tensors | None, error: BaseException | None, reason: str
    ) -> None:
        """Answer ``item`` (a failure when ``reason`` is set) and count it."""
        item.where = DONE
        item.value = item.error = None
        self.pending -= 1
        stats = self.stats
        stats.pending -= 1
        elapsed = _NS() - item.arrival_ns
        future = item.future
        if reason:
            stats.record_failure(reason, elapsed)
            if error is not None and not future.done():
                future.set_exception(error)
        else:
            stats.success.add(elapsed)
            if not future.done() and value is not None:
                future.set_result(value)
        if not self.pending and self._drained is not None:
            self._drained.set()
