"""One live sequence of the sequence batcher: its queued requests, its implicit state, and
the batch row its next request becomes."""

from __future__ import annotations

from collections import deque

from accelserve.scheduling.batching import Tensors
from accelserve.scheduling.queues import RUNNING, Item
from accelserve.scheduling.sequence_config import (
    SequenceId,
    SequencePolicy,
    control_tensors,
    initial_states,
)
from accelserve.scheduling.timers import Cancellable


class LiveSequence:
    """One live sequence: its queued requests and its state between requests."""

    __slots__ = (
        "closed",
        "closing",
        "key",
        "last_t",
        "requests",
        "running",
        "state",
        "successor",
        "timer",
    )

    def __init__(self, key: SequenceId, now: float) -> None:
        self.key = key
        self.requests: deque[SequenceRequest] = deque()
        self.running = False
        self.closing = False  # its end request was cancelled before it ran
        self.closed = False
        self.last_t = now
        self.state: Tensors | None = None
        self.timer: Cancellable | None = None
        # The next sequence of the same id, started before this one's last request ran: it
        # takes a slot once this one closes, so the model never sees both at once.
        self.successor: LiveSequence | None = None

    def next_row(
        self, policy: SequencePolicy, batched: bool, model: str
    ) -> tuple[SequenceRequest, Tensors]:
        """Take the next request to run, with its control inputs and the sequence's state."""
        req = self.requests.popleft()
        self.running = True
        req.item.where = RUNNING
        inputs = dict(req.item.inputs)
        flags = {"start": req.start, "end": req.end, "ready": True}
        inputs.update(
            control_tensors(
                policy.controls, **flags, sequence_id=self.key, batched=batched, model=model
            )
        )
        if policy.states:
            if self.state is None:
                self.state = initial_states(policy.states, batched)
            inputs.update(self.state)
        return req, inputs

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class SequenceRequest:
    __slots__ = ("end", "item", "seq", "start")

    def __init__(self, item: Item, start: bool, end: bool, seq: LiveSequence) -> None:
        self.item, self.start, self.end, self.seq = item, start, end, seq
