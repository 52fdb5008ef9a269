"""BusyPoll on a real event loop: after a touch the loop keeps polling (its callback runs over
and over) until the window has passed, then sleeps; it stands aside while model work holds the
cores; 0 turns it off. Also ``cores_busy`` as real ModelInstances drive it."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from sched_helpers import Doubler

from accelserve.frontends.busy_poll import BusyPoll
from accelserve.scheduling import CoreActivity, ModelInstance

uvloop = pytest.importorskip("uvloop")


class Counter:
    """``cores_busy`` for the tests: counts the polls (one call each) and answers ``busy``."""

    def __init__(self, busy: bool = False) -> None:
        self.calls = 0
        self.busy = busy

    def __call__(self) -> bool:
        self.calls += 1
        return self.busy


class FakeNs:
    """A nanosecond clock that moves only when the test sets ``now``."""

    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


async def turns(n: int) -> None:
    """Let the loop go round ``n`` times (a polling callback runs once per round)."""
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("runner", [asyncio.run, uvloop.run], ids=["asyncio", "uvloop"])
def test_polls_through_the_window_then_sleeps(runner) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        clock, polls = FakeNs(), Counter()
        poll = BusyPoll(asyncio.get_running_loop(), 30_000, polls, clock_ns=clock)  # 30 ms
        poll.touch()
        assert poll.polling
        await turns(25)
        assert poll.polling and polls.calls >= 20  # the loop went round, not to sleep
        clock.now = 10_000_000
        poll.touch()  # a second response re-opens the window (to 40 ms) ...
        before = polls.calls
        clock.now = 35_000_000
        await turns(10)
        assert poll.polling and polls.calls - before <= 11  # ... without a second poller
        clock.now = 41_000_000
        await turns(3)
        assert not poll.polling
        settled = polls.calls
        await turns(10)
        assert polls.calls == settled  # asleep: no polling after the window

    runner(main())


def test_stands_aside_while_model_work_holds_the_cores() -> None:
    async def main() -> None:
        busy = Counter(busy=True)
        poll = BusyPoll(asyncio.get_running_loop(), 1_000_000, busy, clock_ns=FakeNs())  # 1 s
        poll.touch()
        await turns(5)
        assert not poll.polling and busy.calls == 1  # looked once, then slept
        busy.busy = False
        poll.touch()  # the next response polls again
        await turns(5)
        assert poll.polling and busy.calls > 2

    asyncio.run(main())


def test_zero_window_never_polls_and_negative_is_refused() -> None:
    async def main() -> None:
        polls = Counter()
        poll = BusyPoll(asyncio.get_running_loop(), 0, polls)
        poll.touch()
        await turns(5)
        assert not poll.polling and polls.calls == 0

    asyncio.run(main())
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match=r"busy_poll_us: expected >= 0; received -1"):
            BusyPoll(loop, -1)
    finally:
        loop.close()


def test_cores_busy_follows_instance_threads_and_spinning_backends() -> None:
    now_ns = [0]
    activity = CoreActivity(spin_after_call_ns=1_000_000, clock_ns=lambda: now_ns[0])
    gate = threading.Event()
    slow = Doubler(gate=gate)
    spinner = Doubler()
    spinner.spins_after_call = True
    slow_instance = ModelInstance("busy_slow", slow, activity=activity)
    spin_instance = ModelInstance("busy_spin", spinner, activity=activity)
    x = {"x": np.ones((1, 2), np.float32)}

    async def main() -> None:
        assert not activity.busy()
        job = asyncio.ensure_future(slow_instance.run(x))
        await asyncio.to_thread(slow.entered.wait, 30)
        assert activity.busy()  # a job on an instance thread
        gate.set()
        await job
        assert not activity.busy()
        await spin_instance.run(x)
        assert activity.busy()  # its pool still spins
        now_ns[0] += 2 * 1_000_000
        assert not activity.busy()

    try:
        asyncio.run(main())
    finally:
        slow_instance.close()
        spin_instance.close()


def test_each_server_has_its_own_activity() -> None:
    """No process-wide state: another server's instances never make this one's cores busy."""
    ours, theirs = CoreActivity(), CoreActivity()
    theirs.handed_off()
    assert theirs.busy() and not ours.busy()
