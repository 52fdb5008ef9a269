"""ModelInstance inline execution: after a tiny job, the next runs on the event loop's thread
(CPU devices only); the first job, jobs after a slow one, accelerator devices and jobs behind
one still on the thread use the instance thread."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from sched_helpers import Doubler, until

from accelserve.devices import Device
from accelserve.scheduling import ModelInstance


def _x(value: int) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 2), value, np.float32)}


def _run_calls(instance: ModelInstance, backend: Doubler, values: range) -> list[str]:
    """Run one call per value in order; return the thread name each ran on."""
    seen: list[str] = []

    async def main() -> None:
        for value in values:
            before = set(backend.threads)
            backend.threads.clear()
            out = await instance.run(_x(value))
            np.testing.assert_array_equal(out["y"], np.full((1, 2), 2 * value, np.float32))
            seen.extend(backend.threads)
            backend.threads |= before

    asyncio.run(main())
    return seen


def test_tiny_cpu_jobs_run_inline_after_the_first() -> None:
    backend = Doubler()
    # A 1 s limit: "tiny" whatever else runs on the machine (a preempted job stays under it).
    instance = ModelInstance("tiny_0", backend, inline_below_ns=10**9)
    try:
        threads = _run_calls(instance, backend, range(20))
        assert threads[0] == "accelserve-tiny_0"  # the first job never blocks the loop
        assert set(threads[1:]) == {threading.current_thread().name}
        assert instance.execution_count == 20
    finally:
        instance.close()
    assert backend.unloaded_on == "accelserve-tiny_0"


def test_slow_jobs_stay_on_the_thread() -> None:
    backend = Doubler(delay=0.002)  # 2 ms: far over the inline limit
    instance = ModelInstance("slow_0", backend)
    try:
        assert set(_run_calls(instance, backend, range(5))) == {"accelserve-slow_0"}
    finally:
        instance.close()


def test_a_job_that_turns_slow_moves_back_to_the_thread() -> None:
    backend = Doubler()
    instance = ModelInstance("m_0", backend, inline_below_ns=1_000_000)  # 1 ms
    try:
        assert _run_calls(instance, backend, range(5))[-1] == threading.current_thread().name
        backend.delay = 0.02  # now 20 ms: that job runs inline, the next ones on the thread
        threads = _run_calls(instance, backend, range(5, 8))
        assert threads == [threading.current_thread().name, "accelserve-m_0", "accelserve-m_0"]
    finally:
        instance.close()


def test_accelerator_instances_never_run_inline() -> None:
    backend = Doubler()
    backend.device = Device("cuda", 0)  # GPU runtimes keep per-thread state
    instance = ModelInstance("gpu_0", backend)
    try:
        assert set(_run_calls(instance, backend, range(10))) == {"accelserve-gpu_0"}
    finally:
        instance.close()


def test_inline_errors_reach_the_caller_and_done_is_never_called_inside_submit() -> None:
    backend = Doubler()
    instance = ModelInstance("m_0", backend, inline_below_ns=10**9)  # load-proof "tiny"

    async def main() -> None:
        await instance.run(_x(1))  # the first job, on the thread
        with pytest.raises(RuntimeError, match="negative input"):
            await instance.run(_x(-1))
        calls: list[object] = []
        instance.submit(lambda: 5, lambda result, exc: calls.append(result))
        assert calls == []  # delivered by the loop, not from within submit
        await asyncio.sleep(0)
        assert calls == [5]

    try:
        asyncio.run(main())
        assert threading.current_thread().name in backend.threads
    finally:
        instance.close()


def test_a_job_waits_behind_one_still_on_the_thread() -> None:
    gate = threading.Event()
    backend = Doubler(gate=gate)
    instance = ModelInstance("m_0", backend, inline_below_ns=10**12)  # anything may go inline

    async def main() -> None:
        first = asyncio.ensure_future(instance.run(_x(1)))  # the first job: on the thread
        await until(backend.entered.is_set)
        second = asyncio.ensure_future(instance.run(_x(2)))  # submitted while the first runs
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, second)

    try:
        asyncio.run(main())
        assert backend.batches == [[1], [2]]
        assert backend.threads == {"accelserve-m_0"}  # not inline: FIFO on the thread
    finally:
        instance.close()


def test_backends_that_wait_on_another_process_never_run_inline() -> None:
    class Remote(Doubler):
        inline_ok = False

    backend = Remote()
    instance = ModelInstance("remote_0", backend)
    try:
        assert set(_run_calls(instance, backend, range(10))) == {"accelserve-remote_0"}
    finally:
        instance.close()
