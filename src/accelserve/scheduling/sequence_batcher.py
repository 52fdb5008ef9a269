"""Triton's sequence batcher, for stateful models (``sequence_batching`` in the config).

A request names its sequence with the parameters ``sequence_id`` (numeric or string),
``sequence_start`` and ``sequence_end``. A sequence is bound to one instance slot from its start
to its end (``sequence_slots``); its requests run one at a time, in arrival order, each with the
control inputs the config asks for (``sequence_config``) and, with implicit ``state``, the state
the previous request left. Batches hold at most one request per sequence:
- ``direct``: batch row i is slot i of the instance; free rows are fillers with READY false;
- ``oldest``: the instance's sequences whose next request came first, rows packed.
A sequence with no request in flight for ``max_sequence_idle_microseconds`` expires and frees its
slot. A request for an unknown, ended or expired sequence, or a second start of an active one,
is refused (400) naming the sequence. Batches are never run again in parts (``isolation``): a
stateful model would see a request twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from typing import Any

from accelserve.errors import (
    AccelServeError,
    ConfigError,
    InvalidArgumentError,
    ModelExecutionError,
    UnavailableError,
)
from accelserve.scheduling.answers import Answers
from accelserve.scheduling.batching import Tensors, batch_signature
from accelserve.scheduling.execution import batch_error, execute_batch
from accelserve.scheduling.instances import Engine, ModelInstance
from accelserve.scheduling.queues import DONE, QUEUED, Item
from accelserve.scheduling.sequence_config import (
    CORRID,
    SequenceId,
    SequencePolicy,
    corrid_value,
    filler_row,
    refusal,
    sequence_parameters,
    take_states,
)
from accelserve.scheduling.sequence_live import LiveSequence, SequenceRequest
from accelserve.scheduling.sequence_slots import SlotTable, direct_rows, may_grow, oldest_pick
from accelserve.scheduling.timers import Clock, Timer
from accelserve.stats import ModelStats, failure_reason
from accelserve.types import InferRequest

_NS = time.perf_counter_ns
_REMEMBERED = 4096  # ended/expired sequence ids kept to say why a later request is refused


class SequenceBatcher:
    """Runs one stateful model's sequences on its instances (a ``model.Runner``)."""

    def __init__(
        self,
        model_name: str,
        policy: SequencePolicy,
        instances: Sequence[ModelInstance[Any]],
        stats: ModelStats,
        clock: Clock | None = None,
    ) -> None:
        if not instances:
            raise ConfigError(
                f"model '{model_name}': instance_group: expected at least 1 instance; received 0"
            )
        self.model_name = model_name
        self.policy = policy
        self.instances: list[ModelInstance[Engine]] = list(instances)
        self.stats = stats
        self._clock = Clock() if clock is None else clock
        self._batched = policy.max_batch_size > 0
        self._idle_s = policy.idle_us / 1e6
        self._corrids = [c for c in policy.controls if c.kind == CORRID]
        self._slots: SlotTable[LiveSequence] = SlotTable(
            len(self.instances), policy.slots_per_instance
        )
        self._active: dict[SequenceId, LiveSequence] = {}
        self._gone: OrderedDict[SequenceId, str] = OrderedDict()  # id -> "ended" | "expired"
        self._ending: dict[SequenceId, LiveSequence] = {}  # ended, its last request not yet run
        self._busy = [False] * len(self.instances)
        self._delay_s = policy.max_queue_delay_us / 1e6
        self._timers: list[Timer | None] = [None] * len(self.instances)  # queue delay
        self._answers = Answers(stats, False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick_scheduled = False
        self._stopping = False
        self._closed = False

    @property
    def pending(self) -> int:
        return self._answers.pending

    # -- admission ---------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> Tensors:
        arrival_ns = _NS()
        try:
            req = self._admit(request, arrival_ns)
        except AccelServeError as exc:
            self.stats.record_failure(failure_reason(exc), _NS() - arrival_ns)
            raise
        try:
            return await req.item.future
        except asyncio.CancelledError:
            self._cancel(req)
            raise

    def _admit(self, request: InferRequest, arrival_ns: int) -> SequenceRequest:
        name = self.model_name
        if self._stopping:
            raise UnavailableError(f"model '{name}' is stopping")
        sid, start, end = sequence_parameters(request.parameters, name)
        inputs = request.inputs
        if self._batched:
            for input_name, array in inputs.items():
                if array.ndim == 0 or array.shape[0] != 1:
                    raise InvalidArgumentError(
                        f"input '{input_name}': model '{name}' takes one row per sequence "
                        f"request (batch size 1); received shape {list(array.shape)}"
                    )
        for control in self._corrids:  # a wrong id type fails before the sequence changes
            corrid_value(control, sid, name)
        now = self._clock.now()
        seq = self._active.get(sid)
        if seq is not None and self._idle_past(seq, now):
            self._expire(seq)  # its idle timer has not fired yet
            seq = None
        if start:
            if seq is not None:
                raise InvalidArgumentError(
                    f"sequence {sid!r} of model '{name}' is already active: expected "
                    "sequence_start only on its first request (end it with sequence_end first)"
                )
            seq = self._active[sid] = LiveSequence(sid, now)
            self._gone.pop(sid, None)
            ending = self._ending.get(sid)
            if ending is None:
                self._slots.bind(seq)
            else:
                ending.successor = seq
        elif seq is None:
            raise InvalidArgumentError(
                refusal(sid, self._gone.get(sid), self.model_name, self.policy.idle_us)
            )
        loop = self._loop = asyncio.get_running_loop()
        sig = batch_signature(inputs) if self._batched else None
        item = Item(inputs, 1, sig, 0, loop.create_future(), arrival_ns, now)
        req = SequenceRequest(item, start, end, seq)
        seq.requests.append(req)
        seq.last_t = now
        seq.cancel_timer()
        if end:  # later requests for this id need a new start
            del self._active[sid]
            self._remember(sid, "ended")
            self._ending[sid] = seq
        self._answers.accept(item)
        if not self._kick_scheduled:
            self._kick_scheduled = True  # requests arriving in this loop turn share a batch
            loop.call_soon(self._kick)
        return req

    def _remember(self, sid: SequenceId, why: str) -> None:
        self._gone[sid] = why
        self._gone.move_to_end(sid)
        if len(self._gone) > _REMEMBERED:
            self._gone.popitem(last=False)

    # -- batches -----------------------------------------------------------------------------

    def _kick(self) -> None:
        self._kick_scheduled = False
        for index, instance in enumerate(self.instances):
            if not self._busy[index]:
                rows = self._form(index)
                if rows:
                    self._launch(index, instance, rows)

    def _form(self, index: int) -> list[LiveSequence | None]:
        """The next batch of ``index``: one row per sequence with a queued request, all of the
        oldest such request's signature (None rows are direct's fillers)."""
        holders = self._slots.holders(index)
        ready = [(slot, seq) for slot, seq in holders.items() if seq.requests]
        if not ready:
            return []
        oldest = min(ready, key=lambda pair: pair[1].requests[0].item.arrival_t)
        if not self._batched:
            return [oldest[1]]
        sig = oldest[1].requests[0].item.sig
        ready = [(slot, seq) for slot, seq in ready if seq.requests[0].item.sig == sig]
        if self._delay_s and not self._stopping and self._may_grow(len(ready), len(holders)):
            wake = oldest[1].requests[0].item.arrival_t + self._delay_s
            if self._clock.now() < wake:
                self._arm(index, wake)
                return []
        if self.policy.strategy == "direct":
            by_slot = dict(ready)
            return [None if i is None else by_slot[i] for i in direct_rows(list(by_slot))]
        arrivals = [seq.requests[0].item.arrival_t for _, seq in ready]
        return [ready[i][1] for i in oldest_pick(arrivals, self.policy.rows_per_batch)]

    def _may_grow(self, ready: int, held: int) -> bool:
        p = self.policy
        return may_grow(
            ready,
            held,
            p.rows_per_batch,
            direct=p.strategy == "direct",
            slots=p.slots_per_instance,
            min_utilization=p.minimum_slot_utilization,
            preferred=p.preferred_batch_sizes,
        )

    def _arm(self, index: int, wake: float) -> None:
        """Kick again at ``wake`` (the oldest request's queue delay), once per instance."""
        timer = self._timers[index]
        if timer is None:
            assert self._loop is not None
            timer = self._timers[index] = self._clock.timer(self._loop, self._kick)
        timer.arm(wake)

    def _launch(
        self, index: int, instance: ModelInstance[Engine], rows: list[LiveSequence | None]
    ) -> None:
        policy, batched = self.policy, self._batched
        batch: list[Tensors] = []
        reqs: list[SequenceRequest | None] = []
        template: Tensors = {}
        for seq in rows:
            if seq is None:
                batch.append({})
                reqs.append(None)
                continue
            req, inputs = seq.next_row(policy, batched, self.model_name)
            template = template or req.item.inputs
            batch.append(inputs)
            reqs.append(req)
        for i, taken in enumerate(reqs):
            if taken is None:
                batch[i] = filler_row(policy, template, self.model_name)
        self._busy[index] = True
        job = partial(execute_batch, instance.backend.infer, batch, [1] * len(batch), batched)
        instance.submit(job, partial(self._finish, index, reqs))

    def _finish(
        self, index: int, reqs: list[SequenceRequest | None], result: Any, exc: BaseException | None
    ) -> None:
        """Back on the loop: answer the batch's requests, keep their sequences' state."""
        self._busy[index] = False
        stats, complete, now = self.stats, self._answers.complete, self._clock.now()
        real = [r for r in reqs if r is not None]
        parts: list[Tensors | None] = [None] * len(reqs)
        error: AccelServeError | None = None
        start_ns = input_ns = infer_ns = output_ns = 0
        if exc is None:
            parts, start_ns, input_ns, infer_ns, output_ns = result
            stats.record_batch(len(real), input_ns, infer_ns, output_ns)
            stats.last_inference_ms = time.time_ns() // 1_000_000
        else:
            error = batch_error(self.model_name, exc, len(real), len(real))
        for req, part in zip(reqs, parts, strict=True):
            if req is None:
                continue
            seq = req.seq
            seq.running = False
            seq.last_t = now
            failure = error
            if part is not None:
                try:
                    part, state = take_states(self.policy.states, part, self.model_name)
                    seq.state = state or None
                except ModelExecutionError as state_error:
                    failure = state_error
            if req.item.where != DONE:
                if failure is not None or part is None:
                    complete(req.item, None, failure, "BACKEND")
                else:
                    stats.queue.add(start_ns - req.item.arrival_ns)
                    stats.compute_input.add(input_ns)
                    stats.compute_infer.add(infer_ns)
                    stats.compute_output.add(output_ns)
                    stats.inference_count += 1
                    complete(req.item, part, None, "")
            if req.end or (seq.closing and not seq.requests):
                self._close(seq)
            elif not seq.requests:
                self._watch_idle(seq)
        self._kick()

    # -- sequence life -----------------------------------------------------------------------

    def _idle_past(self, seq: LiveSequence, now: float) -> bool:
        return not seq.requests and not seq.running and now - seq.last_t >= self._idle_s

    def _watch_idle(self, seq: LiveSequence) -> None:
        if self._loop is None or seq.closed:
            return
        seq.cancel_timer()
        wait = max(seq.last_t + self._idle_s - self._clock.now(), 0.0)
        seq.timer = self._clock.later(self._loop, wait, partial(self._on_idle, seq))

    def _on_idle(self, seq: LiveSequence) -> None:
        seq.timer = None
        if seq.closed or seq.requests or seq.running:
            return  # it closes, or is watched again once its requests are answered
        if self._idle_past(seq, self._clock.now()):
            self._expire(seq)
        else:  # the loop's timer fired early
            self._watch_idle(seq)

    def _expire(self, seq: LiveSequence) -> None:
        if self._active.get(seq.key) is seq:
            del self._active[seq.key]
            self._remember(seq.key, "expired")
        self._close(seq)

    def _close(self, seq: LiveSequence) -> None:
        """Free the sequence's slot (a backlogged sequence may take it)."""
        if seq.closed:
            return
        seq.closed = True
        seq.cancel_timer()
        seq.state = None
        if self._ending.get(seq.key) is seq:
            del self._ending[seq.key]
        moved = self._slots.release(seq) is not None
        if seq.successor is not None and not seq.successor.closed:
            self._slots.bind(seq.successor)  # it may be in _ending already: it ended too
            moved = True
        if moved and not self._kick_scheduled and self._loop:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)

    def _cancel(self, req: SequenceRequest) -> None:
        """The caller went away: drop the request if queued, ignore its result if running."""
        item, seq = req.item, req.seq
        if item.where == DONE:
            return
        if item.where == QUEUED:
            seq.requests.remove(req)
            if req.end:
                seq.closing = True
            if seq.closing and not seq.requests and not seq.running:
                self._close(seq)
            elif not seq.requests and not seq.running:
                self._watch_idle(seq)
        self._answers.fail_now(item, None, "CANCELED")

    # -- shutdown ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Refuse new requests; answer the accepted ones (those of sequences still waiting for
        a slot fail: no slot frees once sequences stop arriving); close the instances."""
        self._stopping = True
        for seq in self._slots.backlog:
            for req in seq.requests:
                if req.item.where == QUEUED:
                    error = UnavailableError(
                        f"model '{self.model_name}' is stopping; sequence {req.seq.key!r} "
                        "never got a slot"
                    )
                    self._answers.fail_now(req.item, error, "OTHER")
            seq.requests.clear()
        if self._loop is not None and not self._kick_scheduled:
            self._kick_scheduled = True
            self._loop.call_soon(self._kick)  # a batch waiting on its delay runs now
        await self._answers.drained()
        for seq in list(self._active.values()):
            seq.cancel_timer()
        for timer in self._timers:
            if timer is not None and self._loop is not None and not self._loop.is_closed():
                timer.close()
        if not self._closed:
            self._closed = True
            for instance in self.instances:
                instance.close()
