"""Per-model scheduler: Triton's default scheduler and dynamic batcher, event-driven.

Everything runs on one asyncio loop, driven by callbacks rather than a polling task:
``_kick`` forms batches while an instance is idle and requests are queued; it runs when a
request arrives (coalesced with ``call_soon`` so a burst arriving in one loop turn shares a
batch), when an instance finishes, and when the queue-delay timer fires. A batch is merged,
executed and split on the instance's own thread, so the loop never copies tensors.

Requests wait in per-priority queues (``queues``); the next batch is gathered from them
(``forming``), then:
- full (cap reached, or the next compatible request does not fit), stopping, or no queue
  delay configured: run what was gathered;
- the oldest gathered request waited max_queue_delay: run all of it;
- a preferred batch size is reachable: run the largest such prefix now;
- otherwise wait until the oldest request's delay elapses or more requests arrive.
Answers go out now or in arrival order (``answers``). A dynamic batch of several requests that
fails runs again in parts until the requests that fail it are found (``isolation``), so one
client's bad data fails only its own request; a model without dynamic batching runs one request
per call and is never retried (nor are stateful models, which ``sequence_batcher`` runs).

Text models (``sequence_inputs``, see ``sequences``): requests of different lengths share a
batch, padded; with ``max_batch_tokens`` the batch is the oldest request plus the queued ones of
similar length that fit max_batch_size rows and the token budget.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable, Sequence
from functools import partial
from typing import Any

from accelserve.errors import (
    AccelServeError,
    ConfigError,
    InvalidArgumentError,
    QueueFullError,
    QueueTimeoutError,
    UnavailableError,
)
from accelserve.scheduling.answers import Answers
from accelserve.scheduling.batching import Tensors, batch_signature, request_rows
from accelserve.scheduling.execution import batch_error, execute_batch
from accelserve.scheduling.forming import gather, gather_by_length
from accelserve.scheduling.instances import Engine, ModelInstance
from accelserve.scheduling.isolation import Isolated, execute_isolating
from accelserve.scheduling.policy import BatchingPolicy
from accelserve.scheduling.queues import DONE, QUEUED, RUNNING, Item, LevelQueues
from accelserve.scheduling.sequences import sequence_length, signature, trim
from accelserve.scheduling.timers import Clock, Timer
from accelserve.stats import ModelStats, failure_reason
from accelserve.types import InferRequest

_NS = time.perf_counter_ns

Instance = ModelInstance[Engine]


class Scheduler:
    """Queues one model's requests and runs them, batched, on its instances."""

    def __init__(
        self,
        model_name: str,
        policy: BatchingPolicy,
        instances: Sequence[ModelInstance[Any]],
        stats: ModelStats,
        clock: Clock | None = None,
        default_max_queue_size: int = 0,
    ) -> None:
        if not instances:
            raise ConfigError(
                f"model '{model_name}': instance_group: expected at least 1 instance; received 0"
            )
        self.model_name = model_name
        self.policy = policy
        self.instances: list[Instance] = list(instances)
        self.stats = stats
        self._clock = Clock() if clock is None else clock
        self._batches = policy.max_batch_size > 0  # inputs carry a batch dimension
        self._dynamic = policy.dynamic
        self._one_per_batch = not (policy.dynamic and self._batches)
        seq = policy.sequence if self._batches else None
        self._seq = seq
        # Length-aware batch choice (sequences.choose_by_length) needs a token budget.
        self._max_tokens = seq.max_tokens if seq is not None and not self._one_per_batch else 0
        preferred = policy.preferred_batch_sizes
        self._cap = max(preferred) if preferred else max(1, policy.max_batch_size)
        self._preferred = frozenset(preferred)
        self._delay_s = policy.max_queue_delay_us / 1e6 if policy.dynamic else 0.0
        levels = policy.levels if policy.dynamic else 1
        self._default_level = max(1, policy.default_priority_level) - 1
        self._queue_policies = [policy.queue_policy(level + 1) for level in range(levels)]
        rejects = [qp.timeout_action == "REJECT" for qp in self._queue_policies]
        self._queues = LevelQueues(levels, rejects)
        if default_max_queue_size < 0:
            raise ConfigError(
                f"default max queue size: expected >= 0 (0: unbounded); "
                f"received {default_max_queue_size}"
            )
        # Per level: the config's max_queue_size, else the server's default (0: unbounded).
        self._queue_limits = [
            (qp.max_queue_size, "max_queue_size")
            if qp.max_queue_size
            else (default_max_queue_size, "the server's --default-max-queue-size")
            for qp in self._queue_policies
        ]
        self._answers = Answers(stats, policy.dynamic and policy.preserve_ordering)
        # A failed batch of several requests is run again in parts (isolation); only dynamic
        # batches hold several requests, and they carry no state from call to call.
        self._execute = execute_isolating if self._dynamic and self._batches else execute_batch
        # Instances with nothing in flight, and (depth 2) those running one request. Without
        # batching, an instance is handed its next request while it runs one, so its thread goes
        # straight on instead of waiting for a round trip through the loop; with batching, the
        # requests keep gathering in the queue instead, into a larger batch.
        self._depth = 2 if self._one_per_batch else 1
        self._idle = list(reversed(self.instances))  # pop() hands out instances[0] first
        self._spare: list[Instance] = []
        self._inflight = dict.fromkeys(self.instances, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick_scheduled = False
        self._timer: Timer | None = None  # queue delay (sub-millisecond: see timers)
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._timer_armed = False
        self._timer_wake = 0.0
        self._stopping = False
        self._closed = False

    @property
    def pending(self) -> int:
        """Requests accepted and not yet answered."""
        return self._answers.pending

    # -- admission ---------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> Tensors:
        """Queue ``request`` and return all of the backend's outputs for exactly it. Every
        failure is counted in the statistics; a caller cancelled while its request waits
        takes the request out of the queue (CANCELED), unrun."""
        arrival_ns = _NS()
        try:
            item = self._admit(request, arrival_ns)
        except AccelServeError as exc:  # refused before it was queued
            self.stats.record_failure(failure_reason(exc), _NS() - arrival_ns)
            raise
        try:
            return await item.future
        except asyncio.CancelledError:
            self._cancel(item)
            raise

    def _admit(self, request: InferRequest, arrival_ns: int) -> Item:
        """Queue ``request`` as an Item, or raise why it cannot be."""
        if self._stopping:
            raise UnavailableError(f"model '{self.model_name}' is stopping")
        level = self._level_of(request.priority)
        inputs = request.inputs
        qp = self._queue_policies[level]
        limit, source = self._queue_limits[level]
        if limit and self._queues.sizes[level] >= limit:
            raise QueueFullError(
                f"Exceeds maximum queue size: model '{self.model_name}' already has {limit} "
                f"queued requests at priority level {level + 1} ({source} {limit}); retry later"
            )
        seq = self._seq
        length = 0
        if seq is not None:
            try:
                length = sequence_length(inputs, seq)
            except InvalidArgumentError as exc:
                raise InvalidArgumentError(f"model '{self.model_name}': {exc.message}") from None
            inputs = trim(inputs, seq, length)  # drop padding an earlier step added
            sig: Hashable = signature(inputs, seq)
        else:
            sig = None if self._one_per_batch else batch_signature(inputs)
        loop = self._loop = asyncio.get_running_loop()
        item = Item(
            inputs,
            request_rows(inputs) if self._batches else 1,
            sig,
            level,
            loop.create_future(),
            arrival_ns,
            self._clock.now(),
        )
        item.length = length
        if self._dynamic:
            timeout_us = qp.timeout_us(request.timeout_us)
            if timeout_us:
                item.timeout_us = timeout_us
                item.deadline = item.arrival_t + timeout_us / 1e6
                self._watch_deadline(item, timeout_us / 1e6)
        self._queues.push(item)
        self._answers.accept(item)
        if self._one_per_batch:
            self._kick()  # nothing to gather: straight to a free instance
        elif not self._kick_scheduled:
            self._kick_scheduled = True  # a burst arriving in this loop turn shares the batch
            loop.call_soon(self._kick)
        return item

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
        while self._queues.queued and (self._idle or self._spare):
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

    def _take_batch(self) -> list[Item] | None:
        """Remove and return the next batch to run, or None to wait (a timer is armed)."""
        now = self._clock.now()
        expired: list[Item] = []
        queued = self._queues.live(now, expired)
        best = 0
        if self._max_tokens:
            chosen, full = gather_by_length(queued, self._cap, self._max_tokens)
        else:
            chosen, best, full = gather(queued, self._cap, self._preferred, self._one_per_batch)
        queued.close()
        for item in expired:
            self._reject_expired(item)
        if not chosen:
            return None
        if not (full or self._stopping or self._delay_s == 0.0):
            wake = min(item.arrival_t for item in chosen) + self._delay_s
            if now < wake:
                if not best:
                    self._arm(wake)
                    return None
                chosen = chosen[:best]
        return chosen

    def _arm(self, wake: float) -> None:
        if self._timer_armed and self._timer_wake == wake:
            return
        loop = self._loop
        assert loop is not None
        if self._timer is None or self._timer_loop is not loop:
            self._close_timer()
            self._timer, self._timer_loop = self._clock.timer(loop, self._on_timer), loop
        self._timer_wake = wake
        self._timer_armed = True
        self._timer.arm(wake)

    def _on_timer(self) -> None:
        self._timer_armed = False
        self._kick()

    def _close_timer(self) -> None:
        self._timer_armed = False
        if self._timer is not None:
            assert self._timer_loop is not None
            if not self._timer_loop.is_closed():
                self._timer.close()
            self._timer = self._timer_loop = None

    # -- execution ---------------------------------------------------------------------------

    def _launch(self, batch: list[Item], instance: Instance) -> None:
        self._queues.take(batch)
        job = partial(
            self._execute if len(batch) > 1 else execute_batch,
            instance.backend.infer,
            [item.inputs for item in batch],
            [item.rows for item in batch],
            self._batches,
            self._seq,
            [item.length for item in batch] if self._seq is not None else None,
        )
        instance.submit(job, partial(self._finish, batch, instance))

    def _finish(
        self, batch: list[Item], instance: Instance, result: Any, exc: BaseException | None
    ) -> None:
        """Back on the loop after ``execute_batch``: answer the batch's requests, then go on."""
        left = self._inflight[instance] = self._inflight[instance] - 1
        if left:  # depth 2: its second place is free again
            self._spare.append(instance)
        else:
            if self._depth > 1:
                self._spare.remove(instance)
            self._idle.append(instance)
        stats = self.stats
        complete = self._answers.complete
        if isinstance(result, Isolated):
            self._finish_isolated(batch, result)
        elif exc is None:
            parts, start_ns, input_ns, infer_ns, output_ns = result
            stats.record_batch(sum(item.rows for item in batch), input_ns, infer_ns, output_ns)
            stats.last_inference_ms = time.time_ns() // 1_000_000
            queue_add = stats.queue.add
            answered = rows = 0
            for item, part in zip(batch, parts, strict=True):
                if item.where == DONE:  # cancelled while running
                    continue
                queue_add(start_ns - item.arrival_ns)
                answered += 1
                rows += item.rows
                complete(item, part, None, "")
            if answered:  # each answered request is charged the whole batch's compute
                stats.compute_input.add(input_ns * answered, answered)
                stats.compute_infer.add(infer_ns * answered, answered)
                stats.compute_output.add(output_ns * answered, answered)
                stats.inference_count += rows
        else:
            rows = sum(item.rows for item in batch)
            error = batch_error(self.model_name, exc, rows, len(batch))
            for item in batch:
                if item.where != DONE:
                    complete(item, None, error, "BACKEND")
        self._kick()

    def _finish_isolated(self, batch: list[Item], outcome: Isolated) -> None:
        """A failed batch run again in parts: each request gets the answer or the error of the
        part it ran in last; each successful part counts as one execution."""
        stats = self.stats
        stats.isolation_retries += outcome.retries
        for run in outcome.runs:
            stats.record_batch(run.rows, run.input_ns, run.infer_ns, run.output_ns)
        if outcome.runs:
            stats.last_inference_ms = time.time_ns() // 1_000_000
        complete = self._answers.complete
        for item, part, error, index in zip(
            batch, outcome.parts, outcome.errors, outcome.run_of, strict=True
        ):
            if item.where == DONE:  # cancelled while running
                continue
            if part is None:
                failure = batch_error(self.model_name, error or RuntimeError(), item.rows, 1)
                complete(item, None, failure, "BACKEND")
                continue
            run = outcome.runs[index]
            stats.queue.add(outcome.start_ns - item.arrival_ns)
            stats.compute_input.add(run.input_ns)
            stats.compute_infer.add(run.infer_ns)
            stats.compute_output.add(run.output_ns)
            stats.inference_count += item.rows
            complete(item, part, None, "")

    # -- timeouts and cancellation -----------------------------------------------------------

    def _watch_deadline(self, item: Item, delay: float) -> None:
        assert self._loop is not None
        item.timer = self._clock.later(self._loop, delay, partial(self._on_deadline, item))

    def _on_deadline(self, item: Item) -> None:
        item.timer = None
        if item.where != QUEUED:
            return
        left = item.deadline - self._clock.now()
        if left > 0:  # the loop's timer fired early (uvloop rounds to whole milliseconds)
            self._watch_deadline(item, max(left, 0.001))
            return
        if self._queues.rejects(item.level):
            self._reject_expired(item)
        else:
            self._queues.delay(item)

    def _reject_expired(self, item: Item) -> None:
        self._queues.drop(item)
        waited_us = (_NS() - item.arrival_ns) // 1000
        error = QueueTimeoutError(
            f"Request timeout expired: model '{self.model_name}' request waited {waited_us} us "
            f"in the queue, past its timeout of {item.timeout_us} us"
        )
        self._answers.fail_now(item, error, "OTHER")

    def _cancel(self, item: Item) -> None:
        """The caller went away: drop the request if queued, ignore its result if running."""
        if item.where == DONE:
            return
        if item.where != RUNNING:
            self._queues.drop(item)
        self._answers.fail_now(item, None, "CANCELED")

    # -- shutdown ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Refuse new requests, run every accepted one (without queue delay), close instances."""
        self._stopping = True
        if self.pending and self._loop is not None and not self._kick_scheduled:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)  # a batch waiting on its delay runs now
        await self._answers.drained()
        self._close_timer()
        if not self._closed:
            self._closed = True
            for instance in self.instances:
                instance.close()
