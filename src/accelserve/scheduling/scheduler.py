"""Per-model scheduler: Triton's default scheduler and dynamic batcher, event-driven.

Everything runs on one asyncio loop, driven by callbacks rather than a polling task:
``_kick`` forms batches while an instance is idle and requests are queued; it runs when a
request arrives (coalesced with ``call_soon`` so a burst arriving in one loop turn shares a
batch), when an instance finishes, and when the queue-delay timer fires. A batch is merged,
executed and split on the instance's own thread, so the loop never copies tensors.

Queues: one per priority level (level 1 first), each a FIFO plus a "delayed" FIFO of requests
whose DELAY timeout expired (they run after the level's other requests, as in Triton).
Requests leave a queue lazily: a request taken out of order, rejected or cancelled is only
marked, and is dropped when it reaches the head.

Batch formation (dynamic batching), from the highest-priority oldest request, with requests of
the same ``batch_signature``, up to ``cap`` rows (the largest preferred batch size, else
max_batch_size, as in Triton):
- full (cap reached, or the next compatible request does not fit), stopping, or no queue
  delay configured: run what was gathered;
- the oldest gathered request waited max_queue_delay: run all of it;
- a preferred batch size is reachable: run the largest such prefix now;
- otherwise wait until the oldest request's delay elapses or more requests arrive.

Text models (``sequence_inputs``, see ``sequences``): requests of different lengths share a
batch, padded; with ``max_batch_tokens`` the batch is the oldest request plus the queued ones of
similar length that fit max_batch_size rows and the token budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Hashable
from functools import partial
from typing import Any

import numpy as np

from accelserve.errors import (
    ConfigError,
    InvalidArgumentError,
    ModelExecutionError,
    QueueFullError,
    QueueTimeoutError,
    UnavailableError,
)
from accelserve.scheduling.batching import batch_signature, request_rows
from accelserve.scheduling.execution import execute_batch, failure_message
from accelserve.scheduling.instances import ModelInstance
from accelserve.scheduling.policy import BatchingPolicy
from accelserve.scheduling.sequences import (
    choose_by_length,
    sequence_length,
    signature,
    trim,
)
from accelserve.scheduling.timers import PreciseTimer
from accelserve.stats import ModelStats
from accelserve.types import InferRequest

# Where a request is (``_Item.where``).
_QUEUED, _DELAYED, _RUNNING, _DONE = 0, 1, 2, 3

_NS = time.perf_counter_ns
# Token-aware batching looks this far into the queue for requests of similar length.
_MAX_CANDIDATES = 1024


class _Item:
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
        inputs: dict[str, np.ndarray],
        rows: int,
        sig: Hashable,
        level: int,
        future: asyncio.Future[dict[str, np.ndarray]],
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
        self.arrival_t = arrival_t  # time.monotonic(), for delays and deadlines
        self.deadline = math.inf
        self.timeout_us = 0
        self.timer: asyncio.TimerHandle | None = None
        self.where = _QUEUED
        # Held result, for preserve_ordering.
        self.ready = False
        self.value: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        self.reason = ""


class Scheduler:
    """Queues one model's requests and runs them, batched, on its instances."""

    def __init__(
        self,
        model_name: str,
        policy: BatchingPolicy,
        instances: list[ModelInstance],
        stats: ModelStats,
    ) -> None:
        if not instances:
            raise ConfigError(
                f"model '{model_name}': instance_group: expected at least 1 instance; received 0"
            )
        self.model_name = model_name
        self.policy = policy
        self.instances = list(instances)
        self.stats = stats
        self._batches = policy.max_batch_size > 0  # inputs carry a batch dimension
        self._dynamic = policy.dynamic
        self._one_per_batch = not (policy.dynamic and self._batches)
        seq = policy.sequence if self._batches else None
        self._seq = seq
        # Length-aware batch choice (sequences.choose_by_length) needs a token budget.
        self._by_length = seq is not None and seq.max_tokens > 0 and not self._one_per_batch
        preferred = policy.preferred_batch_sizes
        self._cap = max(preferred) if preferred else max(1, policy.max_batch_size)
        self._preferred = frozenset(preferred)
        self._delay_s = policy.max_queue_delay_us / 1e6 if policy.dynamic else 0.0
        levels = policy.levels if policy.dynamic else 1
        self._levels = levels
        self._default_level = max(1, policy.default_priority_level) - 1
        queue_policies = [policy.queue_policy(level + 1) for level in range(levels)]
        self._queue_policies = queue_policies
        self._rejects = [qp.timeout_action == "REJECT" for qp in queue_policies]
        self._main: list[deque[_Item]] = [deque() for _ in range(levels)]
        self._delayed: list[deque[_Item]] = [deque() for _ in range(levels)]
        self._sizes = [0] * levels  # queued requests per level (max_queue_size)
        self._queued = 0
        self._pending = 0
        # Instances with nothing in flight, and (depth 2) those running one request. Without
        # batching, an instance is handed its next request while it runs one, so its thread goes
        # straight on instead of waiting for a round trip through the loop; with batching, the
        # requests keep gathering in the queue instead, into a larger batch.
        self._depth = 2 if self._one_per_batch else 1
        self._idle = list(reversed(self.instances))  # pop() hands out instances[0] first
        self._spare: list[ModelInstance] = []
        self._inflight = dict.fromkeys(self.instances, 0)
        self._order: deque[_Item] | None = (
            deque() if policy.dynamic and policy.preserve_ordering else None
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick_scheduled = False
        self._timer: PreciseTimer | None = None  # queue delay (sub-millisecond: see timers)
        self._timer_armed = False
        self._timer_wake = 0.0
        self._stopping = False
        self._closed = False
        self._drained: asyncio.Event | None = None

    @property
    def pending(self) -> int:
        """Requests accepted and not yet answered."""
        return self._pending

    # -- admission ---------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        """Queue ``request`` and return all of the backend's outputs for exactly it."""
        arrival_ns = _NS()
        if self._stopping:
            raise UnavailableError(f"model '{self.model_name}' is stopping")
        level = self._level_of(request.priority)
        inputs = request.inputs
        if self._dynamic:
            qp = self._queue_policies[level]
            limit = qp.max_queue_size
            if limit and self._sizes[level] >= limit:
                self.stats.record_failure("REJECTED", _NS() - arrival_ns)
                raise QueueFullError(
                    f"Exceeds maximum queue size: model '{self.model_name}' already has {limit} "
                    f"queued requests at priority level {level + 1} (max_queue_size {limit})"
                )
        seq = self._seq
        length = 0
        if seq is not None:
            length = sequence_length(inputs, seq)
            inputs = trim(inputs, seq, length)  # drop padding an earlier step added
            sig: Hashable = signature(inputs, seq)
        else:
            sig = None if self._one_per_batch else batch_signature(inputs)
        loop = self._loop = asyncio.get_running_loop()
        item = _Item(
            inputs,
            request_rows(inputs) if self._batches else 1,
            sig,
            level,
            loop.create_future(),
            arrival_ns,
            time.monotonic(),
        )
        item.length = length
        if self._dynamic:
            timeout_us = qp.timeout_us(request.timeout_us)
            if timeout_us:
                item.timeout_us = timeout_us
                item.deadline = item.arrival_t + timeout_us / 1e6
                item.timer = loop.call_later(timeout_us / 1e6, self._on_deadline, item)
        self._main[level].append(item)
        self._sizes[level] += 1
        self._queued += 1
        self._pending += 1
        self.stats.pending += 1
        if self._order is not None:
            self._order.append(item)
        if self._one_per_batch:
            self._kick()  # nothing to gather: straight to a free instance
        elif not self._kick_scheduled:
            self._kick_scheduled = True  # a burst arriving in this loop turn shares the batch
            loop.call_soon(self._kick)
        try:
            return await item.future
        except asyncio.CancelledError:
            self._cancel(item)
            raise

    def _level_of(self, priority: int) -> int:
        if priority == 0:
            return self._default_level
        levels = self.policy.priority_levels if self._dynamic else 0
        if 1 <= priority <= levels:
            return priority - 1
        if levels == 0:
            raise InvalidArgumentError(
                f"priority: model '{self.model_name}' has no priority levels, expected 0; "
                f"received {priority}"
            )
        raise InvalidArgumentError(
            f"priority: expected 0 (the default level) or 1..{levels} for model "
            f"'{self.model_name}'; received {priority}"
        )

    # -- batch formation ---------------------------------------------------------------------

    def _kick(self) -> None:
        self._kick_scheduled = False
        while self._queued and (self._idle or self._spare):
            batch = self._take_batch()
            if batch is None:
                return
            if self._idle:
                instance = self._idle.pop()
                if self._depth > 1:
                    self._spare.append(instance)
            else:
                instance = self._spare.pop()
            self._inflight[instance] += 1
            self._launch(batch, instance)

    def _take_batch(self) -> list[_Item] | None:
        """Remove and return the next batch to run, or None to wait (a timer is armed)."""
        if self._by_length:
            return self._take_by_length()
        now = time.monotonic()
        chosen: list[_Item] = []
        expired: list[_Item] = []
        rows = best = 0
        full = False
        sig: Hashable = None
        cap, preferred = self._cap, self._preferred
        for level in range(self._levels):
            reject = self._rejects[level]
            self._trim(level)
            for dq, tag in ((self._main[level], _QUEUED), (self._delayed[level], _DELAYED)):
                for item in dq:
                    if item.where != tag:
                        continue
                    if reject and item.deadline <= now:
                        expired.append(item)  # its timer has not fired yet
                        continue
                    if not chosen:
                        sig = item.sig
                    elif item.sig != sig:
                        continue
                    elif rows + item.rows > cap:
                        full = True
                        break
                    chosen.append(item)
                    rows += item.rows
                    if rows in preferred:
                        best = len(chosen)
                    if rows >= cap or self._one_per_batch:
                        full = True
                        break
                if full:
                    break
            if full:
                break
        for item in expired:
            self._reject_expired(item)
        if not chosen:
            return None
        if not (full or self._stopping or self._delay_s == 0.0):
            wake = min(item.arrival_t for item in chosen) + self._delay_s
            if now < wake:
                if not best:
                    self._arm(wake, now)
                    return None
                chosen = chosen[:best]
        return chosen

    def _take_by_length(self) -> list[_Item] | None:
        """Token-aware batch: the oldest request, then queued requests of similar length, up to
        max_batch_size rows and max_batch_tokens padded tokens (sequences.choose_by_length)."""
        assert self._seq is not None
        now = time.monotonic()
        candidates: list[_Item] = []
        expired: list[_Item] = []
        sig: Hashable = None
        for level in range(self._levels):
            reject = self._rejects[level]
            self._trim(level)
            for dq, tag in ((self._main[level], _QUEUED), (self._delayed[level], _DELAYED)):
                for item in dq:
                    if item.where != tag:
                        continue
                    if reject and item.deadline <= now:
                        expired.append(item)
                        continue
                    if not candidates:
                        sig = item.sig
                    elif item.sig != sig:
                        continue
                    if len(candidates) < _MAX_CANDIDATES:
                        candidates.append(item)
        for item in expired:
            self._reject_expired(item)
        if not candidates:
            return None
        picked = choose_by_length(
            [(item.rows, item.length) for item in candidates], self._cap, self._seq.max_tokens
        )
        chosen = [candidates[i] for i in picked]
        full = len(chosen) < len(candidates) or sum(item.rows for item in chosen) >= self._cap
        if not (full or self._stopping or self._delay_s == 0.0):
            wake = min(item.arrival_t for item in chosen) + self._delay_s
            if now < wake:
                self._arm(wake, now)
                return None
        return chosen

    def _trim(self, level: int) -> None:
        """Drop the requests that left a level's queues from their heads."""
        for dq, tag in ((self._main[level], _QUEUED), (self._delayed[level], _DELAYED)):
            while dq and dq[0].where != tag:
                dq.popleft()

    def _arm(self, wake: float, now: float) -> None:
        if self._timer_armed and self._timer_wake == wake:
            return
        loop = self._loop
        assert loop is not None
        if self._timer is None or self._timer.loop is not loop:
            self._close_timer()
            self._timer = PreciseTimer(loop, self._on_timer)
        self._timer_wake = wake
        self._timer_armed = True
        self._timer.arm(wake)

    def _on_timer(self) -> None:
        self._timer_armed = False
        self._kick()

    def _close_timer(self) -> None:
        self._timer_armed = False
        if self._timer is not None:
            if not self._timer.loop.is_closed():
                self._timer.close()
            self._timer = None

    # -- execution ---------------------------------------------------------------------------

    def _launch(self, batch: list[_Item], instance: ModelInstance) -> None:
        sizes = self._sizes
        for item in batch:
            item.where = _RUNNING
            sizes[item.level] -= 1
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
        self._queued -= len(batch)
        for level in {item.level for item in batch}:
            self._trim(level)  # so an idle queue holds no finished request's arrays
        job = partial(
            execute_batch,
            instance.backend.infer,
            [item.inputs for item in batch],
            [item.rows for item in batch],
            self._batches,
            self._seq,
            [item.length for item in batch] if self._seq is not None else None,
        )
        instance.submit(job, partial(self._finish, batch, instance))

    def _finish(
        self, batch: list[_Item], instance: ModelInstance, result: Any, exc: BaseException | None
    ) -> None:
        """Back on the loop after ``_execute``: answer the batch's requests, then go on."""
        left = self._inflight[instance] = self._inflight[instance] - 1
        if left:  # depth 2: its second place is free again
            self._spare.append(instance)
        else:
            if self._depth > 1:
                self._spare.remove(instance)
            self._idle.append(instance)
        stats = self.stats
        if exc is None:
            parts, start_ns, input_ns, infer_ns, output_ns = result
            stats.record_batch(sum(item.rows for item in batch), input_ns, infer_ns, output_ns)
            stats.last_inference_ms = time.time_ns() // 1_000_000
            queue_add = stats.queue.add
            answered = rows = 0
            for item, part in zip(batch, parts, strict=True):
                if item.where == _DONE:  # cancelled while running
                    continue
                queue_add(start_ns - item.arrival_ns)
                answered += 1
                rows += item.rows
                self._complete(item, part, None, "")
            if answered:  # each answered request is charged the whole batch's compute
                stats.compute_input.add(input_ns * answered, answered)
                stats.compute_infer.add(infer_ns * answered, answered)
                stats.compute_output.add(output_ns * answered, answered)
                stats.inference_count += rows
        else:
            message = failure_message(self.model_name, sum(item.rows for item in batch), exc)
            for item in batch:
                if item.where != _DONE:
                    self._complete(item, None, ModelExecutionError(message), "BACKEND")
        self._kick()

    # -- answering ---------------------------------------------------------------------------

    def _complete(
        self,
        item: _Item,
        value: dict[str, np.ndarray] | None,
        error: BaseException | None,
        reason: str,
    ) -> None:
        """An executed request's answer: now, or in arrival order under preserve_ordering."""
        if self._order is None:
            self._resolve(item, value, error, reason)
            return
        item.value, item.error, item.reason, item.ready = value, error, reason, True
        self._release()

    def _release(self) -> None:
        order = self._order
        assert order is not None
        while order:
            head = order[0]
            if head.where != _DONE:
                if not head.ready:
                    return
                self._resolve(head, head.value, head.error, head.reason)
            order.popleft()

    def _resolve(
        self,
        item: _Item,
        value: dict[str, np.ndarray] | None,
        error: BaseException | None,
        reason: str,
    ) -> None:
        """Answer ``item`` (a failure when ``reason`` is set) and count it."""
        item.where = _DONE
        item.value = item.error = None
        self._pending -= 1
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
            if not future.done():
                future.set_result(value)  # type: ignore[arg-type]
        if not self._pending and self._drained is not None:
            self._drained.set()

    def _dequeue(self, item: _Item) -> None:
        """Take a still-queued item out of the queue counts (the deques drop it lazily)."""
        self._sizes[item.level] -= 1
        self._queued -= 1
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        item.where = _DONE
        self._trim(item.level)

    def _on_deadline(self, item: _Item) -> None:
        item.timer = None
        if item.where != _QUEUED:
            return
        left = item.deadline - time.monotonic()
        if left > 0:  # the loop's timer fired early (uvloop rounds to whole milliseconds)
            assert self._loop is not None
            item.timer = self._loop.call_later(max(left, 0.001), self._on_deadline, item)
            return
        if self._rejects[item.level]:
            self._reject_expired(item)
        else:  # DELAY: behind the level's requests that have not expired
            item.where = _DELAYED
            self._delayed[item.level].append(item)

    def _reject_expired(self, item: _Item) -> None:
        self._dequeue(item)
        waited_us = (_NS() - item.arrival_ns) // 1000
        error = QueueTimeoutError(
            f"Request timeout expired: model '{self.model_name}' request waited {waited_us} us "
            f"in the queue, past its timeout of {item.timeout_us} us"
        )
        self._resolve(item, None, error, "OTHER")
        if self._order is not None:
            self._release()

    def _cancel(self, item: _Item) -> None:
        """The caller went away: drop the request if queued, ignore its result if running."""
        if item.where == _DONE:
            return
        if item.where != _RUNNING:
            self._dequeue(item)
        self._resolve(item, None, None, "CANCELED")
        if self._order is not None:
            self._release()

    # -- shutdown ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Refuse new requests, run every accepted one (without queue delay), close instances."""
        self._stopping = True
        if self._pending:
            if self._drained is None:
                self._drained = asyncio.Event()
            if self._loop is not None and not self._kick_scheduled:
                self._kick_scheduled = True
                self._loop.call_soon(self._kick)  # a batch waiting on its delay runs now
            await self._drained.wait()
        self._close_timer()
        if not self._closed:
            self._closed = True
            for instance in self.instances:
                instance.close()
