"""Scheduler: queue policy (size limit, timeouts), priorities, failures and cancellation."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from sched_helpers import Build, Doubler, FakeClock, check, request, settle, until

from accelserve.errors import (
    InvalidArgumentError,
    QueueFullError,
    QueueTimeoutError,
)
from accelserve.scheduling import BatchingPolicy, QueuePolicy


def dynamic(max_batch_size: int = 8, **kwargs: object) -> BatchingPolicy:
    return BatchingPolicy(max_batch_size=max_batch_size, dynamic=True, **kwargs)  # type: ignore[arg-type]


def test_full_queue_rejects_at_once(build: Build) -> None:
    gate = threading.Event()
    backend = Doubler(gate=gate)
    sched = build(dynamic(1, default_queue_policy=QueuePolicy(max_queue_size=2)), backend)

    async def main() -> None:
        running = asyncio.ensure_future(sched.infer(request(0)))
        await until(backend.entered.is_set)  # 0 is on the instance; the queue is empty again
        queued = [asyncio.ensure_future(sched.infer(request(i))) for i in (1, 2)]
        await settle()
        with pytest.raises(QueueFullError) as info:  # at once: the instance is still held
            await sched.infer(request(3))
        gate.set()
        message = str(info.value)
        assert "Exceeds maximum queue size" in message
        assert "model 'm'" in message and "max_queue_size 2" in message
        for i, task in enumerate([running, *queued]):
            check(await task, i)

    asyncio.run(main())
    assert sched.stats.fail_reasons == {"REJECTED": 1}
    assert sched.stats.inference_count == 3


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (dynamic(1), "the server's --default-max-queue-size 2"),
        (BatchingPolicy(max_batch_size=1), "the server's --default-max-queue-size 2"),
        (BatchingPolicy(max_batch_size=0), "the server's --default-max-queue-size 2"),
        (dynamic(1, default_queue_policy=QueuePolicy(max_queue_size=3)), "max_queue_size 3"),
    ],
    ids=["dynamic", "not-dynamic", "not-batching", "config-overrides"],
)
def test_server_default_queue_bound(build: Build, policy: BatchingPolicy, expected: str) -> None:
    """Every model's queue is bounded by the server's default unless its config sets its own."""
    gate = threading.Event()
    backend = Doubler(gate=gate)
    sched = build(policy, backend, default_max_queue_size=2)
    limit = int(expected.rsplit(" ", 1)[1])

    async def main() -> None:
        tasks = [asyncio.ensure_future(sched.infer(request(0)))]
        await until(backend.entered.is_set)  # 0 is on the instance
        await settle()
        # A model without batching is handed one more request while it runs one (depth 2).
        while len(tasks) < 1 + limit + (0 if policy.dynamic else 1):
            tasks.append(asyncio.ensure_future(sched.infer(request(len(tasks)))))
            await settle()
        with pytest.raises(QueueFullError) as info:  # at once: the instance is still held
            await sched.infer(request(99))
        assert f"({expected})" in str(info.value)
        gate.set()
        for i, task in enumerate(tasks):
            check(await task, i)

    asyncio.run(main())
    assert sched.stats.fail_reasons == {"REJECTED": 1}


def test_queue_size_limit_is_per_priority_level(build: Build) -> None:
    policy = dynamic(
        1,
        priority_levels=2,
        default_priority_level=2,
        priority_queue_policies={1: QueuePolicy(max_queue_size=1)},
    )
    gate = threading.Event()
    backend = Doubler(gate=gate)
    sched = build(policy, backend)

    async def main() -> None:
        running = asyncio.ensure_future(sched.infer(request(0)))
        await until(backend.entered.is_set)
        high = asyncio.ensure_future(sched.infer(request(1, priority=1)))
        await settle()
        with pytest.raises(QueueFullError, match="priority level 1"):
            await sched.infer(request(2, priority=1))
        low = [sched.infer(request(i)) for i in (3, 4)]  # level 2 has no limit
        gate.set()
        await asyncio.gather(running, high, *low)

    asyncio.run(main())


def test_expired_request_is_rejected_while_the_instance_is_busy(build: Build) -> None:
    policy = dynamic(1, default_queue_policy=QueuePolicy(default_timeout_us=50_000))
    gate = threading.Event()
    backend = Doubler(gate=gate)
    fake = FakeClock()
    sched = build(policy, backend, clock=fake.clock())

    async def main() -> None:
        running = asyncio.ensure_future(sched.infer(request(0)))
        await until(backend.entered.is_set)
        late = asyncio.ensure_future(sched.infer(request(1)))
        await settle()
        fake.advance(0.045)
        await settle()
        assert not late.done()  # not before its timeout
        fake.advance(0.01)  # by its timer, while the instance is still held
        with pytest.raises(QueueTimeoutError) as info:
            await late
        gate.set()
        assert "Request timeout expired" in str(info.value)
        assert "model 'm'" in str(info.value) and "50000 us" in str(info.value)
        check(await running, 0)

    asyncio.run(main())
    assert sched.stats.fail_reasons == {"OTHER": 1}
    assert sched.pending == 0


def test_delayed_request_goes_behind_requests_that_did_not_expire(build: Build) -> None:
    queue_policy = QueuePolicy(timeout_action="DELAY", allow_timeout_override=True)
    gate = threading.Event()
    backend = Doubler(gate=gate)
    fake = FakeClock()
    sched = build(dynamic(1, default_queue_policy=queue_policy), backend, clock=fake.clock())

    async def main() -> None:
        running = asyncio.ensure_future(sched.infer(request(0)))
        await until(backend.entered.is_set)
        late = asyncio.ensure_future(sched.infer(request(1, timeout_us=20_000)))
        await settle()
        fake.advance(0.05)  # 1 has expired by now
        fresh = asyncio.ensure_future(sched.infer(request(2)))
        await settle()
        gate.set()
        for i, task in enumerate((running, late, fresh)):
            check(await task, i)

    asyncio.run(main())
    assert backend.batches == [[0], [2], [1]]
    assert sched.stats.fail.count == 0


def test_higher_priority_requests_are_batched_first(build: Build) -> None:
    policy = dynamic(2, priority_levels=2, default_priority_level=2)
    gate = threading.Event()
    backend = Doubler(gate=gate)
    sched = build(policy, backend)

    async def main() -> None:
        first = asyncio.ensure_future(sched.infer(request(0)))
        await until(backend.entered.is_set)
        rest = [
            asyncio.ensure_future(sched.infer(request(1))),
            asyncio.ensure_future(sched.infer(request(2, priority=2))),
            asyncio.ensure_future(sched.infer(request(3, priority=1))),
            asyncio.ensure_future(sched.infer(request(4, priority=1))),
        ]
        await settle()
        gate.set()
        for i, out in enumerate(await asyncio.gather(first, *rest)):
            check(out, i)

    asyncio.run(main())
    assert backend.batches == [[0], [3, 4], [1, 2]]


@pytest.mark.parametrize(
    ("policy", "priority", "expected"),
    [
        (
            dynamic(4, priority_levels=2, default_priority_level=1),
            3,
            "expected 0 (the default level) or 1..2 for model 'm'; received 3",
        ),
        (
            dynamic(4, priority_levels=2, default_priority_level=1),
            -1,
            "1..2 for model 'm'; received -1",
        ),
        (dynamic(4), 1, "model 'm' has no priority levels, expected 0; received 1"),
        (BatchingPolicy(max_batch_size=4), 2, "no priority levels, expected 0; received 2"),
    ],
)
def test_priority_out_of_range_is_an_invalid_argument(
    build: Build, policy: BatchingPolicy, priority: int, expected: str
) -> None:
    sched = build(policy, Doubler())
    with pytest.raises(InvalidArgumentError) as info:
        asyncio.run(sched.infer(request(1, priority=priority)))
    assert str(info.value).startswith("priority: ")
    assert expected in str(info.value)
    assert sched.pending == 0


def test_cancelled_caller_in_the_queue_leaves_the_batch(build: Build) -> None:
    backend = Doubler()
    queue_policy = QueuePolicy(max_queue_size=3)
    fake = FakeClock()
    policy = dynamic(8, max_queue_delay_us=100_000, default_queue_policy=queue_policy)
    sched = build(policy, backend, clock=fake.clock())

    async def main() -> None:
        tasks = [asyncio.ensure_future(sched.infer(request(i))) for i in range(3)]
        await settle()  # the three wait for the queue delay
        tasks[1].cancel()
        await asyncio.sleep(0)
        assert sched.pending == 2
        tasks.append(asyncio.ensure_future(sched.infer(request(3))))  # its place is free
        await settle()
        fake.advance(0.2)
        for i in (0, 2, 3):
            check(await tasks[i], i)
        assert tasks[1].cancelled()

    asyncio.run(main())
    assert backend.batches == [[0, 2, 3]]
    assert sched.stats.fail_reasons == {"CANCELED": 1}
    assert sched.pending == sched.stats.pending == 0


def test_cancelled_caller_while_running_does_not_break_the_batch(build: Build) -> None:
    gate = threading.Event()
    backend = Doubler(gate=gate)
    sched = build(dynamic(4, preserve_ordering=True), backend)

    async def main() -> None:
        tasks = [asyncio.ensure_future(sched.infer(request(i))) for i in range(3)]
        await until(backend.entered.is_set)  # the batch is running
        tasks[0].cancel()
        await settle()
        gate.set()
        check(await tasks[1], 1)
        check(await tasks[2], 2)

    asyncio.run(main())
    assert backend.batches == [[0, 1, 2]]
    assert sched.stats.fail_reasons == {"CANCELED": 1}
    assert sched.stats.inference_count == 2
    assert sched.pending == 0


def test_rejected_request_does_not_hold_back_ordered_answers(build: Build) -> None:
    policy = dynamic(
        1,
        preserve_ordering=True,
        default_queue_policy=QueuePolicy(default_timeout_us=30_000, allow_timeout_override=True),
    )
    gate = threading.Event()
    backends = (Doubler(gate=gate), Doubler(gate=gate))
    fake = FakeClock()
    sched = build(policy, *backends, clock=fake.clock())

    async def main() -> None:
        tasks = [asyncio.ensure_future(sched.infer(request(i))) for i in range(2)]
        await until(lambda: all(b.entered.is_set() for b in backends))  # both instances busy
        doomed = asyncio.ensure_future(sched.infer(request(2, timeout_us=10_000)))
        await settle()
        fake.advance(0.02)
        with pytest.raises(QueueTimeoutError):
            await doomed
        assert not any(t.done() for t in tasks)  # answered promptly, out of band
        gate.set()
        for i, task in enumerate(tasks):
            check(await task, i)

    asyncio.run(main())


class _Picky(Doubler):
    """Refuses a batch holding the value 13 the way a framework refuses bad data."""

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = super().infer(inputs)  # records the batch and waits for the gate
        if (inputs["x"] == 13).any():
            raise InvalidArgumentError("the value 13 is not accepted")
        return outputs


def test_a_backend_blaming_the_data_is_a_client_error_of_that_request_only(
    build: Build,
) -> None:
    """Alone, the request is refused as the client's fault; in a shared batch, the batch is
    run again in parts (isolation), so its neighbour is answered and it alone is refused."""
    gate = threading.Event()
    backend = _Picky(gate=gate)
    sched = build(dynamic(4), backend)

    async def main() -> list[object]:
        first = asyncio.ensure_future(sched.infer(request(1)))
        await until(backend.entered.is_set)  # the instance is busy: the next two queue up
        queued = [asyncio.ensure_future(sched.infer(request(v))) for v in (2, 13)]
        await settle()
        gate.set()
        shared = await asyncio.gather(first, *queued, return_exceptions=True)
        alone = await asyncio.gather(sched.infer(request(13)), return_exceptions=True)
        return [*alone, *shared]

    alone, first, neighbour, culprit = asyncio.run(main())
    for refused in (alone, culprit):
        assert isinstance(refused, InvalidArgumentError)
        assert str(refused) == "model 'm': the value 13 is not accepted"
    check(first, 1)  # type: ignore[arg-type]
    check(neighbour, 2)  # type: ignore[arg-type]
    assert backend.batches[1:] == [[2, 13], [2], [13], [13]]
    assert sched.stats.isolation_retries == 2
