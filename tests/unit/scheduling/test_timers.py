"""PreciseTimer: fires at its deadline (not before, and not a loop-resolution millisecond later),
re-arms, cancels, and closes; on uvloop as well as asyncio's own loop."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from sched_helpers import Build, Doubler, check, request

from accelserve.errors import QueueTimeoutError
from accelserve.scheduling import BatchingPolicy, QueuePolicy
from accelserve.scheduling.timers import PreciseTimer


def _loops() -> list[str]:
    names = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        names.append("uvloop")
    except ImportError:
        pass
    return names


def _run(kind: str, factory: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if kind == "uvloop":
        import uvloop

        uvloop.run(factory())
    else:
        asyncio.run(factory())


@pytest.mark.parametrize("kind", _loops())
def test_fires_after_the_deadline_and_well_within_a_millisecond(kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        done = asyncio.Event()

        def callback() -> None:
            fired.append(time.monotonic())
            done.set()

        timer = PreciseTimer(loop, callback)
        lateness = []
        for _ in range(20):
            done.clear()
            deadline = time.monotonic() + 200e-6
            timer.arm(deadline)
            await asyncio.wait_for(done.wait(), 1)
            assert fired[-1] >= deadline  # never early
            lateness.append(fired[-1] - deadline)
        timer.close()
        if timer.precise:  # Linux: a timerfd; the median wake is far below a millisecond
            assert sorted(lateness)[len(lateness) // 2] < 0.0008, lateness

    _run(kind, main)


@pytest.mark.parametrize("kind", _loops())
def test_rearm_replaces_and_cancel_stops(kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        calls: list[float] = []
        timer = PreciseTimer(loop, lambda: calls.append(time.monotonic()))
        start = time.monotonic()
        timer.arm(start + 0.5)
        timer.arm(start + 0.01)  # replaces the first arming
        await asyncio.sleep(0.1)
        assert len(calls) == 1 and calls[0] - start < 0.4
        timer.arm(time.monotonic() + 0.02)
        timer.cancel()
        await asyncio.sleep(0.06)
        assert len(calls) == 1
        timer.arm(time.monotonic() - 1)  # a past deadline fires at once
        await asyncio.sleep(0.01)
        assert len(calls) == 2
        timer.close()
        timer.close()  # idempotent

    _run(kind, main)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux only")
def test_linux_uses_a_timerfd() -> None:
    async def main() -> None:
        timer = PreciseTimer(asyncio.get_running_loop(), lambda: None)
        assert timer.precise
        timer.close()

    asyncio.run(main())


uvloop = pytest.importorskip("uvloop")


def test_sub_millisecond_queue_delay_waits_without_spinning(build: Build) -> None:
    """uvloop rounds loop timers to whole milliseconds; the batcher's 300 us delay must still
    be waited (not skipped) and waited asleep (not by re-checking in a busy loop)."""
    policy = BatchingPolicy(max_batch_size=8, dynamic=True, max_queue_delay_us=300)
    sched = build(policy, Doubler())

    async def main() -> tuple[list[float], float, float]:
        waits = []
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for i in range(100):
            start = time.perf_counter()
            check(await sched.infer(request(i)), i)
            waits.append(time.perf_counter() - start)
        return waits, time.perf_counter() - wall0, time.process_time() - cpu0

    waits, wall, cpu = uvloop.run(main())
    assert min(waits) >= 300e-6  # the delay was waited for a partner request
    assert cpu < 0.6 * wall, (cpu, wall)  # spinning would use about as much CPU as wall time


def test_sub_millisecond_request_timeout_is_not_early(build: Build) -> None:
    queue_policy = QueuePolicy(default_timeout_us=400)
    policy = BatchingPolicy(max_batch_size=1, dynamic=True, default_queue_policy=queue_policy)
    sched = build(policy, Doubler(delay=0.05))

    async def main() -> float:
        running = asyncio.ensure_future(sched.infer(request(0)))
        await asyncio.sleep(0.005)
        start = time.monotonic()
        with pytest.raises(QueueTimeoutError):
            await sched.infer(request(1))
        waited = time.monotonic() - start
        check(await running, 0)
        return waited

    assert uvloop.run(main()) >= 400e-6
