"""Request isolation: when a batch of several requests fails, find the requests that fail it.

One client's bad data (a token id outside the vocabulary) makes the backend fail the whole
batch, and every other request in it would fail too. Instead, the batch runs again in halves,
then the failing halves in halves, down to single requests: every request that runs in a part
that succeeds gets its own answer, and a request that fails alone gets its own error. With one
bad request among n that is about 2 log2(n) more backend calls; with all n bad, 2n - 2.

An error that is the server's (``server_fault``: out of memory, the backend closed or its worker
gone) is not retried: no request is to blame, and running it again would only repeat it. Any
other error is retried, since the backend cannot always tell whose data caused it.

This runs on the instance's thread, right after the failed call, so the requests queued behind
the batch wait as they would behind a slower batch. It is pure: no asyncio, no statistics (the
scheduler counts the ``Isolated`` outcome).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from accelserve.errors import ServerFaultError, UnavailableError
from accelserve.scheduling.batching import Tensors
from accelserve.scheduling.execution import execute_batch
from accelserve.scheduling.sequences import SequenceSpec

_NS = time.perf_counter_ns

#: one backend call on the requests at these indices: ``execute_batch``'s result
RunPart = Callable[[list[int]], tuple[list[Tensors], int, int, int, int]]


@dataclass(frozen=True, slots=True)
class Run:
    """One successful call while isolating: its rows and its merge, infer and split ns."""

    rows: int
    input_ns: int
    infer_ns: int
    output_ns: int


@dataclass(slots=True)
class Isolated:
    """A failed batch, run again in parts: per request, its outputs or its own error."""

    start_ns: int  # when the requests left the queue (perf_counter_ns)
    parts: list[Tensors | None]
    errors: list[BaseException | None]
    run_of: list[int]  # per answered request, its index in ``runs`` (-1 when it failed)
    runs: list[Run]
    retries: int  # backend calls made after the batch's first failure


def server_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the server's own failure, which no request caused."""
    return isinstance(exc, ServerFaultError | UnavailableError | MemoryError)


def execute_isolating(
    infer: Callable[[Tensors], Tensors],
    inputs: list[Tensors],
    rows: list[int],
    split: bool,
    sequence: SequenceSpec | None = None,
    lengths: list[int] | None = None,
) -> tuple[list[Tensors], int, int, int, int] | Isolated:
    """``execute_batch``, and when it fails on several requests for a reason that is not the
    server's, ``isolate`` them; a single request's error, or the server's, is raised."""
    start = _NS()
    try:
        return execute_batch(infer, inputs, rows, split, sequence, lengths)
    except Exception as exc:
        if len(inputs) < 2 or server_fault(exc):
            raise

    def run(group: list[int]) -> tuple[list[Tensors], int, int, int, int]:
        return execute_batch(
            infer,
            [inputs[i] for i in group],
            [rows[i] for i in group],
            split,
            sequence,
            [lengths[i] for i in group] if lengths is not None else None,
        )

    outcome = isolate(run, rows)
    outcome.start_ns = start
    return outcome


def isolate(run: RunPart, rows: list[int]) -> Isolated:
    """Run the requests (``rows`` per request) in halves, and the failing halves in halves,
    until every request is answered or has failed alone (or with a server fault)."""
    count = len(rows)
    outcome = Isolated(_NS(), [None] * count, [None] * count, [-1] * count, [], 0)
    half = count // 2
    stack = [list(range(half, count)), list(range(half))]  # the first half runs first
    while stack:
        group = stack.pop()
        outcome.retries += 1
        try:
            parts, _, input_ns, infer_ns, output_ns = run(group)
        except Exception as exc:
            if len(group) > 1 and not server_fault(exc):
                half = len(group) // 2
                stack += [group[half:], group[:half]]
            else:
                for i in group:
                    outcome.errors[i] = exc
            continue
        outcome.runs.append(Run(sum(rows[i] for i in group), input_ns, infer_ns, output_ns))
        for i, part in zip(group, parts, strict=True):
            outcome.parts[i] = part
            outcome.run_of[i] = len(outcome.runs) - 1
    return outcome
