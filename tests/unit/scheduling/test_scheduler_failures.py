"""Scheduler: a caller that goes away while its request waits takes it out of the queue (never
computed, counted CANCELED) without disturbing the running batch; every request refused before
it is queued is counted under its failure reason."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sched_helpers import Build, Doubler, check, request, settle, until

from accelserve.errors import InvalidArgumentError, UnavailableError
from accelserve.scheduling import BatchingPolicy


def dynamic(max_batch_size: int = 8, **kwargs: object) -> BatchingPolicy:
    return BatchingPolicy(max_batch_size=max_batch_size, dynamic=True, **kwargs)  # type: ignore[arg-type]


def test_cancelled_while_queued_behind_a_running_batch_is_never_computed(build: Build) -> None:
    gate = threading.Event()
    backend = Doubler(gate=gate)
    sched = build(dynamic(4), backend)

    async def main() -> None:
        running = [asyncio.ensure_future(sched.infer(request(i))) for i in (1, 2)]
        await until(backend.entered.is_set)  # [1, 2] holds the only instance
        queued = [asyncio.ensure_future(sched.infer(request(i))) for i in (5, 6, 7)]
        await settle()
        assert sched.pending == 5
        queued[0].cancel()  # the callers of 5 and 7 go away while their requests wait
        queued[2].cancel()
        await settle()
        assert sched.pending == 3 and sched.stats.fail_reasons == {"CANCELED": 2}
        assert backend.batches == [[1, 2]]  # the running batch goes on
        gate.set()
        check(await running[0], 1)
        check(await running[1], 2)
        check(await queued[1], 6)
        assert queued[0].cancelled() and queued[2].cancelled()

    asyncio.run(main())
    assert backend.batches == [[1, 2], [6]]  # 5 and 7 never reached the backend
    assert sched.stats.fail_reasons == {"CANCELED": 2}
    assert sched.stats.success.count == 3 and sched.stats.fail.count == 2
    assert sched.stats.inference_count == 3
    assert sched.pending == sched.stats.pending == 0


def test_every_queued_request_cancelled_leaves_the_instance_idle(build: Build) -> None:
    gate = threading.Event()
    backend = Doubler(gate=gate)
    sched = build(dynamic(4), backend)

    async def main() -> None:
        running = asyncio.ensure_future(sched.infer(request(1)))
        await until(backend.entered.is_set)
        queued = [asyncio.ensure_future(sched.infer(request(i))) for i in (5, 6)]
        await settle()
        for task in queued:
            task.cancel()
        await settle()
        gate.set()
        check(await running, 1)
        await settle()  # the instance is free: nothing is left to run
        assert backend.batches == [[1]]
        after = asyncio.ensure_future(sched.infer(request(3)))
        check(await after, 3)

    asyncio.run(main())
    assert backend.batches == [[1], [3]]
    assert sched.stats.fail_reasons == {"CANCELED": 2}


def test_requests_refused_before_the_queue_are_counted(build: Build) -> None:
    sched = build(dynamic(4, priority_levels=2, default_priority_level=1), Doubler())

    async def main() -> None:
        with pytest.raises(InvalidArgumentError, match="priority"):
            await sched.infer(request(1, priority=3))  # levels are 1..2
        check(await sched.infer(request(1, priority=1)), 1)
        stopping = asyncio.ensure_future(sched.stop())
        await settle()
        with pytest.raises(UnavailableError, match="stopping"):
            await sched.infer(request(2))
        await stopping

    asyncio.run(main())
    assert sched.stats.fail_reasons == {"REJECTED": 1, "OTHER": 1}
    assert sched.stats.fail.count == 2 and sched.stats.success.count == 1
    assert sched.pending == 0
