"""Scheduler: how requests are grouped into backend calls and answered (real threads, real
asyncio, a real Backend subclass)."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from sched_helpers import Build, Doubler, FakeClock, check, request, settle, until

from accelserve.errors import ConfigError, UnavailableError
from accelserve.scheduling import BatchingPolicy, Scheduler
from accelserve.stats import ModelStats
from accelserve.types import InferRequest


def dynamic(max_batch_size: int = 8, **kwargs: object) -> BatchingPolicy:
    return BatchingPolicy(max_batch_size=max_batch_size, dynamic=True, **kwargs)  # type: ignore[arg-type]


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(build: Build) -> None:
    backend = Doubler(delay=0.02)
    sched = build(dynamic(8, max_queue_delay_us=5000), backend)

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(sched.infer(request(i)) for i in range(40)))

    results = asyncio.run(main())
    for i, out in enumerate(results):
        check(out, i)
    stats = sched.stats
    assert stats.inference_count == 40
    assert stats.execution_count < stats.inference_count
    assert stats.execution_count == len(backend.batches)
    assert sorted(v for batch in backend.batches for v in batch) == list(range(40))
    assert max(len(batch) for batch in backend.batches) == 8
    assert sum(size * s.compute_infer.count for size, s in stats.batch.items()) == 40
    for duration in (stats.success, stats.queue, stats.compute_infer, stats.compute_output):
        assert duration.count == 40
    assert stats.compute_infer.ns > 0
    assert stats.fail.count == 0
    assert stats.pending == sched.pending == 0
    assert stats.last_inference_ms > time.time() * 1000 - 60_000


def test_multi_row_requests_count_by_rows(build: Build) -> None:
    backend = Doubler(delay=0.02)
    sched = build(dynamic(8, max_queue_delay_us=5000), backend)
    rows = [1, 3, 2, 4, 1, 5, 2, 2, 8, 1]

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(sched.infer(request(i, n)) for i, n in enumerate(rows)))

    for i, (out, n) in enumerate(zip(asyncio.run(main()), rows, strict=True)):
        check(out, i, n)
    assert sched.stats.inference_count == sum(rows)
    assert all(len(batch) <= 8 for batch in backend.batches)
    assert sum(len(batch) for batch in backend.batches) == sum(rows)
    assert sched.stats.execution_count < len(rows)
    assert max(sched.stats.batch) <= 8


def test_batches_are_spread_over_idle_instances(build: Build) -> None:
    # One gate per instance: a permit lets exactly that instance finish one batch, so neither
    # can run ahead and take the other's batch (and no batch waits for a permit inline, on the
    # loop the test needs to hand permits out).
    backends = [Doubler(gate=threading.Semaphore(0)), Doubler(gate=threading.Semaphore(0))]
    sched = build(dynamic(4), *backends)

    def each_holds(n: int) -> bool:
        return all(len(b.batches) == n for b in backends)

    def release_each() -> None:
        for b in backends:
            assert isinstance(b.gate, threading.Semaphore)
            b.gate.release()

    async def main() -> None:
        tasks = [asyncio.ensure_future(sched.infer(request(i))) for i in range(16)]
        # Both instances hold a batch at once: two at a time, not in a row.
        await until(lambda: each_holds(1))
        release_each()
        await until(lambda: each_holds(2))
        release_each()
        for i, out in enumerate(await asyncio.gather(*tasks)):
            check(out, i)

    asyncio.run(main())
    assert [len(b.batches) for b in backends] == [2, 2]
    assert all(len(batch) == 4 for b in backends for batch in b.batches)


def test_requests_of_different_shapes_never_share_a_batch(build: Build) -> None:
    backend = Doubler(delay=0.01)
    sched = build(dynamic(8, max_queue_delay_us=5000), backend)
    widths = [2, 3, 2, 3, 3, 2, 2, 3]

    async def main() -> list[dict[str, np.ndarray]]:
        reqs = [
            InferRequest(inputs={"x": np.full((1, w), i, np.float32)}) for i, w in enumerate(widths)
        ]
        return await asyncio.gather(*(sched.infer(r) for r in reqs))

    for i, (out, w) in enumerate(zip(asyncio.run(main()), widths, strict=True)):
        np.testing.assert_array_equal(out["y"], np.full((1, w), 2 * i, np.float32))
    assert sorted(map(sorted, backend.batches)) == [[0, 2, 5, 6], [1, 3, 4, 7]]


def test_preferred_batch_size_runs_at_once_and_the_rest_waits_the_delay(build: Build) -> None:
    backend = Doubler()
    fake = FakeClock()
    policy = dynamic(8, preferred_batch_sizes=(2, 4), max_queue_delay_us=300_000)
    sched = build(policy, backend, clock=fake.clock())

    async def main(n: int) -> list[asyncio.Future[dict[str, np.ndarray]]]:
        tasks = [asyncio.ensure_future(sched.infer(request(i))) for i in range(n)]
        await until(lambda: sum(t.done() for t in tasks) >= 2)
        await settle()
        if n == 3:  # 2 is preferred: it ran at once; the third waits for the delay
            assert not tasks[2].done()
            fake.advance(0.29)
            await settle()
            assert not tasks[2].done()
            fake.advance(0.02)
        await asyncio.gather(*tasks)
        for i, task in enumerate(tasks):
            check(task.result(), i)
        return tasks

    asyncio.run(main(3))
    assert backend.batches == [[0, 1], [2]]
    asyncio.run(main(4))  # the largest preferred size: one batch, no waiting (clock unmoved)
    assert backend.batches[2:] == [[0, 1, 2, 3]]


def test_queue_delay_waits_for_more_requests(build: Build) -> None:
    backend = Doubler()
    fake = FakeClock()
    sched = build(dynamic(8, max_queue_delay_us=200_000), backend, clock=fake.clock())

    async def main() -> None:
        first = asyncio.ensure_future(sched.infer(request(1)))
        await settle()
        fake.advance(0.05)
        rest = [asyncio.ensure_future(sched.infer(request(i))) for i in (2, 3)]
        await settle()
        fake.advance(0.14)  # the first request's delay has not passed: still waiting
        await settle()
        assert not first.done() and backend.batches == []
        fake.advance(0.02)
        check(await first, 1)
        for task, i in zip(rest, (2, 3), strict=True):
            check(await task, i)

    asyncio.run(main())
    assert backend.batches == [[1, 2, 3]]


def test_zero_queue_delay_runs_what_is_there(build: Build) -> None:
    backend = Doubler()
    fake = FakeClock()  # never advanced: the request cannot wait on a delay
    sched = build(dynamic(8, max_queue_delay_us=0), backend, clock=fake.clock())

    async def main() -> None:
        check(await sched.infer(request(1)), 1)

    asyncio.run(main())
    assert backend.batches == [[1]]


def test_without_dynamic_batching_requests_run_one_per_call_in_order(build: Build) -> None:
    backend = Doubler(delay=0.01)
    sched = build(BatchingPolicy(max_batch_size=8), backend)
    rows = [1, 2, 1, 3, 1]

    async def main() -> list[dict[str, np.ndarray]]:
        return await asyncio.gather(*(sched.infer(request(i, n)) for i, n in enumerate(rows)))

    for i, (out, n) in enumerate(zip(asyncio.run(main()), rows, strict=True)):
        check(out, i, n)
    assert backend.batches == [[i] * n for i, n in enumerate(rows)]
    assert sched.stats.execution_count == 5
    assert sched.stats.inference_count == sum(rows)


def test_unbatched_model_gets_whole_inputs_spread_over_instances(build: Build) -> None:
    gate = threading.Event()
    backends = [Doubler(gate=gate), Doubler(gate=gate)]
    sched = build(BatchingPolicy(max_batch_size=0), *backends)

    async def main() -> None:
        reqs = [InferRequest(inputs={"x": np.full(3, i, np.float32)}) for i in range(4)]
        tasks = [asyncio.ensure_future(sched.infer(r)) for r in reqs]
        await until(lambda: all(b.entered.is_set() for b in backends))
        gate.set()  # two at a time, not four in a row
        for i, out in enumerate(await asyncio.gather(*tasks)):
            np.testing.assert_array_equal(out["y"], np.full(3, 2 * i, np.float32))

    asyncio.run(main())
    assert all(len(b.batches) == 2 for b in backends)
    assert sched.stats.inference_count == sched.stats.execution_count == 4
    assert list(sched.stats.batch) == [1]


@pytest.mark.parametrize("preserve", [True, False])
def test_preserve_ordering_across_instances_of_different_speeds(
    build: Build, preserve: bool
) -> None:
    gate = threading.Event()
    slow, fast = Doubler(gate=gate), Doubler()
    sched = build(dynamic(1, preserve_ordering=preserve), slow, fast)
    answered: list[int] = []

    async def one(i: int) -> None:
        check(await sched.infer(request(i)), i)
        answered.append(i)

    async def main() -> None:
        first = asyncio.ensure_future(one(1))
        await until(slow.entered.is_set)
        second = asyncio.ensure_future(one(2))
        await until(lambda: sched.stats.execution_count == 1)  # 2 is back from its instance
        gate.set()
        await asyncio.gather(first, second)

    asyncio.run(main())
    assert (slow.batches, fast.batches) == ([[1]], [[2]])  # 2 finished first
    assert answered == ([1, 2] if preserve else [2, 1])


@pytest.mark.parametrize(
    "policy",
    [dynamic(2, max_queue_delay_us=5_000_000), BatchingPolicy(max_batch_size=2)],
    ids=["dynamic", "default"],
)
def test_stop_runs_every_accepted_request_then_closes(build: Build, policy: BatchingPolicy) -> None:
    gate = threading.Event()
    backend = Doubler(gate=gate)
    fake = FakeClock()  # never advanced: stop does not wait for the 5 s queue delay
    sched = build(policy, backend, clock=fake.clock())

    async def main() -> None:
        tasks = [asyncio.ensure_future(sched.infer(request(i))) for i in range(5)]
        await until(backend.entered.is_set)
        stopping = asyncio.ensure_future(sched.stop())
        await settle()
        gate.set()
        await stopping
        assert all(t.done() for t in tasks)
        for i, t in enumerate(tasks):
            check(t.result(), i)
        with pytest.raises(UnavailableError, match="model 'm' is stopping"):
            await sched.infer(request(9))
        await sched.stop()  # idempotent

    asyncio.run(main())
    assert sched.stats.inference_count == 5
    assert sched.pending == 0
    assert backend.unloaded_on == "accelserve-m_0"


def test_stop_runs_a_batch_waiting_on_its_queue_delay_at_once(build: Build) -> None:
    backend = Doubler()
    fake = FakeClock()  # never advanced: only stop can start the batch
    sched = build(dynamic(8, max_queue_delay_us=5_000_000), backend, clock=fake.clock())

    async def main() -> None:
        tasks = [asyncio.ensure_future(sched.infer(request(i))) for i in range(3)]
        await settle()  # waiting for more requests; the instance is idle
        assert backend.batches == []
        await sched.stop()
        for i, t in enumerate(tasks):
            check(t.result(), i)

    asyncio.run(main())
    assert backend.batches == [[0, 1, 2]]


def test_stop_with_nothing_pending_closes_at_once(build: Build) -> None:
    backend = Doubler()
    sched = build(dynamic(4), backend)
    asyncio.run(sched.stop())
    assert backend.unloaded_on is not None


def test_a_scheduler_needs_an_instance() -> None:
    with pytest.raises(ConfigError, match="expected at least 1 instance; received 0"):
        Scheduler("m", dynamic(4), [], ModelStats("m", "1"))
