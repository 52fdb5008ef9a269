"""ModelInstance: backend calls on the instance's own thread, errors carried back, close."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from sched_helpers import Doubler

from accelserve.errors import UnavailableError
from accelserve.scheduling import ModelInstance


def test_run_calls_the_backend_on_the_instance_thread() -> None:
    backend = Doubler()
    instance = ModelInstance("simple_0", backend)
    try:
        out = asyncio.run(instance.run({"x": np.ones((2, 2), np.float32)}))
        np.testing.assert_array_equal(out["y"], np.full((2, 2), 2, np.float32))
        assert backend.threads == {"accelserve-simple_0"}
        assert threading.current_thread().name not in backend.threads
        assert instance.device == backend.device
    finally:
        instance.close()


def test_run_raises_the_backend_error() -> None:
    instance = ModelInstance("m_0", Doubler())
    try:
        with pytest.raises(RuntimeError, match="negative input"):
            asyncio.run(instance.run({"x": -np.ones((1, 2), np.float32)}))
    finally:
        instance.close()


def test_calls_from_concurrent_callers_run_one_at_a_time_in_order() -> None:
    backend = Doubler(delay=0.01)
    instance = ModelInstance("m_0", backend)

    async def main() -> None:
        await asyncio.gather(
            *(instance.run({"x": np.full((1, 2), i, np.float32)}) for i in range(5))
        )

    try:
        asyncio.run(main())
        assert backend.batches == [[0], [1], [2], [3], [4]]
    finally:
        instance.close()


def test_close_unloads_on_the_instance_thread_and_refuses_more_work() -> None:
    backend = Doubler()
    instance = ModelInstance("m_0", backend)
    instance.close()
    instance.close()  # idempotent
    assert backend.unloaded_on == "accelserve-m_0"
    with pytest.raises(UnavailableError, match="model instance 'm_0' is closed"):
        asyncio.run(instance.run({"x": np.ones((1, 2), np.float32)}))
