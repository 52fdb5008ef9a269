"""SequenceBatcher: stateful accumulators under both strategies, fillers, idle expiry with a
fake clock, errors naming the sequence, implicit state carried by the scheduler."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sched_helpers import FakeClock, settle, until

from accelserve.backends.base import Backend
from accelserve.config import parse_config
from accelserve.devices import Device
from accelserve.errors import InvalidArgumentError, ModelExecutionError, UnavailableError
from accelserve.scheduling import Clock, ModelInstance
from accelserve.scheduling.sequence_batcher import SequenceBatcher
from accelserve.scheduling.sequence_config import SequencePolicy
from accelserve.stats import ModelStats
from accelserve.types import InferRequest

CONTROLS = """control_input [
  { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
  { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] } ] },
  { name: "END" control [ { kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] } ] },
  { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: %s } ] } ]"""
STATE = (
    """state [{ input_name: "SUM_IN" output_name: "SUM_OUT" data_type: TYPE_INT64 dims: [ 1 ] }]"""
)


class Accumulator(Backend):
    """Keeps a running sum per correlation id from the control inputs (a stateful model), or,
    with ``stateless``, adds INPUT to the state input SUM_IN (the server keeps the sum).
    Records each batch's (CORRID, READY) rows. A gate holds batches while the test queues more."""

    def __init__(self, stateless: bool = False, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.stateless = stateless
        self.gate = gate
        self.sums: dict[Any, int] = {}
        self.batches: list[list[tuple[Any, int]]] = []

    def load(self, version_dir: Path, config: Any, device: Device) -> None:
        self.device = device

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.gate is not None:
            assert self.gate.wait(30)
        x = inputs["INPUT"]
        if self.stateless:
            total = inputs["SUM_IN"] + x
            return {"OUTPUT": total, "SUM_OUT": total}
        ids = inputs["CORRID"][:, 0].tolist()
        ready = inputs["READY"][:, 0].tolist()
        self.batches.append(list(zip(ids, ready, strict=True)))
        out = np.zeros_like(x, dtype=np.int64)
        for row, (cid, is_ready) in enumerate(zip(ids, ready, strict=True)):
            if not is_ready:
                continue
            if inputs["START"][row, 0]:
                self.sums[cid] = 0
            self.sums[cid] += int(x[row, 0])
            out[row, 0] = self.sums[cid]
            if inputs["END"][row, 0]:
                del self.sums[cid]
        return {"OUTPUT": out}


@pytest.fixture
def made() -> Iterator[list[ModelInstance[Any]]]:
    instances: list[ModelInstance[Any]] = []
    yield instances
    for instance in instances:
        instance.close()


def batcher(
    made: list[ModelInstance[Any]],
    body: str,
    *backends: Backend,
    clock: Clock | None = None,
    max_batch_size: int = 4,
) -> SequenceBatcher:
    config = parse_config(
        f'name: "acc" max_batch_size: {max_batch_size} sequence_batching {{ {body} }}'
    )
    instances = [ModelInstance(f"acc_{i}", b) for i, b in enumerate(backends)]
    made.extend(instances)
    return SequenceBatcher(
        "acc", SequencePolicy.from_config(config), instances, ModelStats("acc", "1"), clock=clock
    )


def req(value: int, sid: int | str, start: bool = False, end: bool = False) -> InferRequest:
    params: dict[str, object] = {"sequence_id": sid, "sequence_start": start, "sequence_end": end}
    return InferRequest(inputs={"INPUT": np.array([[value]], np.int32)}, parameters=params)


async def sums(seq: SequenceBatcher, *requests: InferRequest) -> list[int]:
    outputs = await asyncio.gather(*(seq.infer(r) for r in requests))
    return [int(o["OUTPUT"][0, 0]) for o in outputs]


@pytest.mark.parametrize("strategy", ["direct { }", "oldest { max_candidate_sequences: 4 }"])
@pytest.mark.parametrize(
    ("corrid_type", "ids"), [("TYPE_UINT64", (11, 12)), ("TYPE_STRING", ("a", "b"))]
)
def test_interleaved_sequences_keep_their_own_sums(
    made: list[ModelInstance[Any]], strategy: str, corrid_type: str, ids: tuple[Any, Any]
) -> None:
    backend = Accumulator()
    seq = batcher(made, strategy + CONTROLS % corrid_type, backend)
    a, b = ids

    async def main() -> None:
        assert await sums(seq, req(1, a, start=True), req(10, b, start=True)) == [1, 10]
        # Two requests of one sequence arriving together run one after the other, in order.
        assert await sums(seq, req(2, a), req(3, a), req(20, b)) == [3, 6, 30]
        assert await sums(seq, req(4, a, end=True), req(30, b, end=True)) == [10, 60]

    asyncio.run(main())
    key = (lambda v: v.encode()) if corrid_type == "TYPE_STRING" else (lambda v: v)
    for rows in backend.batches:
        ready_ids = [cid for cid, ready in rows if ready]
        assert len(ready_ids) == len(set(ready_ids))  # at most one request per sequence per batch
    assert {cid for rows in backend.batches for cid, r in rows if r} == {key(a), key(b)}
    assert backend.sums == {}


def test_direct_keeps_each_sequence_in_its_row_with_fillers(made: list[ModelInstance[Any]]) -> None:
    backend = Accumulator()
    seq = batcher(made, "direct { }" + CONTROLS % "TYPE_UINT64", backend)

    async def main() -> None:
        await sums(seq, req(1, 5, start=True), req(1, 6, start=True), req(1, 7, start=True))
        backend.batches.clear()
        assert await sums(seq, req(1, 7)) == [2]  # slot 2: rows 0 and 1 are fillers

    asyncio.run(main())
    assert backend.batches == [[(0, 0), (0, 0), (7, 1)]]


def test_oldest_packs_rows_and_two_instances_share_sequences(
    made: list[ModelInstance[Any]],
) -> None:
    first, second = Accumulator(), Accumulator()
    seq = batcher(made, "oldest { }" + CONTROLS % "TYPE_UINT64", first, second)

    async def main() -> None:
        starts = [req(i, 100 + i, start=True) for i in range(4)]
        assert await sums(seq, *starts) == [0, 1, 2, 3]
        assert await sums(seq, *(req(5, 100 + i, end=True) for i in range(4))) == [5, 6, 7, 8]

    asyncio.run(main())
    # Sequences alternate between the instances and stay there; rows are packed (no fillers).
    assert {c for b in first.batches for c, _ in b} == {100, 102}
    assert {c for b in second.batches for c, _ in b} == {101, 103}
    assert all(r == 1 for b in first.batches + second.batches for _, r in b)


def test_errors_name_the_sequence(made: list[ModelInstance[Any]]) -> None:
    clock = FakeClock()
    seq = batcher(
        made,
        "max_sequence_idle_microseconds: 2000000 " + CONTROLS % "TYPE_UINT64",
        Accumulator(),
        clock=clock.clock(),
    )

    async def main() -> None:
        with pytest.raises(
            InvalidArgumentError, match="sequence 9 to model 'acc' must specify the START flag"
        ):
            await seq.infer(req(1, 9))
        await seq.infer(req(1, 9, start=True))
        with pytest.raises(
            InvalidArgumentError, match="sequence 9 of model 'acc' is already active"
        ):
            await seq.infer(req(1, 9, start=True))
        assert await sums(seq, req(2, 9, end=True)) == [3]
        with pytest.raises(
            InvalidArgumentError, match=r"sequence 9 of model 'acc' has ended \(sequence_end\)"
        ):
            await seq.infer(req(1, 9))
        assert await sums(seq, req(4, 9, start=True)) == [4]  # a new start begins it again
        # Idle expiry: the timer frees the slot 2 s after the last answer.
        clock.advance(1.9)
        assert await sums(seq, req(1, 9)) == [5]
        clock.advance(2.0)
        await settle()
        with pytest.raises(InvalidArgumentError) as info:
            await seq.infer(req(1, 9))
        assert "sequence 9 of model 'acc' expired: it had no request for 2000000 us" in str(
            info.value
        )
        with pytest.raises(InvalidArgumentError, match="non-zero or non-empty correlation ID"):
            await seq.infer(InferRequest(inputs={"INPUT": np.array([[1]], np.int32)}))
        with pytest.raises(
            InvalidArgumentError,
            match=r"input 'INPUT': model 'acc' takes one row per sequence request \(batch size 1\); received shape \[2, 1\]",
        ):
            await seq.infer(
                InferRequest(
                    inputs={"INPUT": np.ones((2, 1), np.int32)},
                    parameters={"sequence_id": 3, "sequence_start": True},
                )
            )
        with pytest.raises(InvalidArgumentError, match="numeric correlation ids"):
            await seq.infer(req(1, "text", start=True))

    asyncio.run(main())
    assert seq.stats.fail_reasons == {"REJECTED": 7}  # each refusal counted once


def test_idle_expiry_frees_a_slot_for_a_backlogged_sequence(made: list[ModelInstance[Any]]) -> None:
    clock = FakeClock()
    seq = batcher(
        made, CONTROLS % "TYPE_UINT64", FlatAccumulator(), clock=clock.clock(), max_batch_size=0
    )

    async def main() -> None:
        assert await sums_flat(seq, req1(1, 1, start=True)) == [1]
        waiting = asyncio.ensure_future(seq.infer(req1(7, 2, start=True)))  # no free slot
        await settle()
        assert not waiting.done()
        clock.advance(1.0)  # the default idle time (1 s): sequence 1 expires, 2 takes its slot
        await until(waiting.done)
        assert int(waiting.result()["OUTPUT"][0]) == 7
        with pytest.raises(InvalidArgumentError, match="sequence 1 of model 'acc' expired"):
            await seq.infer(req1(1, 1))

    asyncio.run(main())


def req1(value: int, sid: int, start: bool = False) -> InferRequest:
    """A request to a model without batch dimension."""
    params: dict[str, object] = {"sequence_id": sid, "sequence_start": start}
    return InferRequest(inputs={"INPUT": np.array([value], np.int32)}, parameters=params)


async def sums_flat(seq: SequenceBatcher, *requests: InferRequest) -> list[int]:
    outputs = await asyncio.gather(*(seq.infer(r) for r in requests))
    return [int(o["OUTPUT"][0]) for o in outputs]


class FlatAccumulator(Accumulator):
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batched = {k: v[None] for k, v in inputs.items()}
        return {k: v[0] for k, v in super().infer(batched).items()}


@pytest.mark.parametrize("strategy", ["direct { }", "oldest { }"])
def test_implicit_state_is_carried_by_the_scheduler(
    made: list[ModelInstance[Any]], strategy: str
) -> None:
    backend = Accumulator(stateless=True)
    seq = batcher(made, strategy + STATE, backend)

    async def main() -> None:
        assert await sums(seq, req(1, 1, start=True), req(100, "s", start=True)) == [1, 100]
        assert await sums(seq, req(2, 1), req(3, 1), req(200, "s")) == [3, 6, 300]
        outputs = await seq.infer(req(4, 1, end=True))
        assert int(outputs["OUTPUT"][0, 0]) == 10 and "SUM_OUT" not in outputs
        assert await sums(seq, req(5, 1, start=True)) == [5]  # a new start: the state is zero again

    asyncio.run(main())


def test_missing_state_output_is_a_model_error(made: list[ModelInstance[Any]]) -> None:
    backend = Accumulator()  # returns no SUM_OUT
    seq = batcher(made, CONTROLS % "TYPE_UINT64" + STATE, backend)

    async def main() -> None:
        with pytest.raises(ModelExecutionError, match="the backend returned no 'SUM_OUT'"):
            await seq.infer(req(1, 1, start=True))
        await seq.stop()

    asyncio.run(main())


def test_cancelled_request_leaves_the_sequence_running(made: list[ModelInstance[Any]]) -> None:
    gate = threading.Event()
    backend = Accumulator(gate=gate)
    seq = batcher(made, CONTROLS % "TYPE_UINT64", backend)

    async def main() -> None:
        first = asyncio.ensure_future(seq.infer(req(1, 1, start=True)))
        await settle()
        second = asyncio.ensure_future(seq.infer(req(5, 1)))
        await settle()
        second.cancel()
        await settle()
        gate.set()
        assert int((await first)["OUTPUT"][0, 0]) == 1
        assert await sums(seq, req(2, 1, end=True)) == [3]  # the cancelled 5 never ran
        assert seq.pending == 0

    asyncio.run(main())


@pytest.mark.parametrize(
    "strategy",
    [
        "oldest { max_queue_delay_microseconds: 1000 }",
        "direct { max_queue_delay_microseconds: 1000 minimum_slot_utilization: 1.0 }",
    ],
)
def test_queue_delay_waits_for_the_other_sequences(
    made: list[ModelInstance[Any]], strategy: str
) -> None:
    clock = FakeClock()
    backend = Accumulator()
    seq = batcher(
        made, strategy + CONTROLS % "TYPE_UINT64", backend, clock=clock.clock(), max_batch_size=2
    )

    async def main() -> None:
        assert await sums(seq, req(1, 1, start=True), req(10, 2, start=True)) == [1, 10]
        alone = asyncio.ensure_future(seq.infer(req(2, 1)))
        await settle()
        assert not alone.done() and len(backend.batches) == 1  # waits for sequence 2
        assert await sums(seq, req(20, 2)) == [30]  # sequence 2's request completes the batch
        assert int((await alone)["OUTPUT"][0, 0]) == 3
        assert backend.batches[-1] == [(1, 1), (2, 1)]
        alone = asyncio.ensure_future(seq.infer(req(3, 1)))
        await settle()
        assert not alone.done()
        clock.advance(0.001)  # the delay passes: it runs alone
        await until(alone.done)
        assert int(alone.result()["OUTPUT"][0, 0]) == 6

    asyncio.run(main())


def test_stop_fails_backlogged_sequences_and_answers_the_rest(
    made: list[ModelInstance[Any]],
) -> None:
    seq = batcher(made, CONTROLS % "TYPE_UINT64", FlatAccumulator(), max_batch_size=0)

    async def main() -> None:
        assert await sums_flat(seq, req1(1, 1, start=True)) == [1]
        waiting = asyncio.ensure_future(seq.infer(req1(7, 2, start=True)))  # no slot for it
        await settle()
        await seq.stop()
        with pytest.raises(UnavailableError, match="sequence 2 never got a slot"):
            await waiting
        with pytest.raises(UnavailableError, match="model 'acc' is stopping"):
            await seq.infer(req1(1, 1))

    asyncio.run(main())


@pytest.mark.parametrize("strategy", ["direct { }", "oldest { }"])
def test_an_id_restarted_before_its_end_ran_waits_for_it(
    made: list[ModelInstance[Any]], strategy: str
) -> None:
    """A stream may end a sequence and start one with the same id at once: the model never sees
    both in one batch, and each gets its own sums."""
    backend = Accumulator()
    seq = batcher(made, strategy + CONTROLS % "TYPE_UINT64", backend)

    async def main() -> None:
        first = [req(1, 5, start=True), req(2, 5), req(3, 5, end=True)]
        second = [req(10, 5, start=True), req(20, 5, end=True), req(100, 5, start=True)]
        assert await sums(seq, *first, *second) == [1, 3, 6, 10, 30, 100]

    asyncio.run(main())
    assert all(len(rows) == 1 or sum(r for _, r in rows) <= 1 for rows in backend.batches)
    assert backend.sums == {5: 100}
