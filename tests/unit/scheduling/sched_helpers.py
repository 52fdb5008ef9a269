"""Helpers for the scheduling tests: a small real backend (y = 2x) and request builders."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.backends.base import Backend
from accelserve.devices import Device
from accelserve.scheduling import Clock, Scheduler
from accelserve.types import InferRequest


class Doubler(Backend):
    """``y = 2 * x``. A negative value fails the batch; the value 999 makes it return one row
    too few. Records each batch's first-column values.

    A slow backend, as the test controls it: with ``gate``, each batch waits in ``infer`` until
    the test sets the gate (an Event) or releases one call (a Semaphore); ``entered`` says one
    is waiting. ``delay`` sleeps that many seconds per batch, for tests whose point is a batch
    taking real time (inline execution)."""

    def __init__(
        self, delay: float = 0.0, gate: threading.Event | threading.Semaphore | None = None
    ) -> None:
        super().__init__()
        self.delay = delay
        self.gate = gate
        self.entered = threading.Event()
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.unloaded_on: str | None = None

    def load(self, version_dir: Path, config: Any, device: Device) -> None:
        self.device = device

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.threads.add(threading.current_thread().name)
        column = x[:, 0] if x.ndim == 2 else x[:1]
        self.batches.append([int(v) for v in column])
        self.entered.set()
        gate = self.gate
        if gate is not None:
            opened = (
                gate.wait(30) if isinstance(gate, threading.Event) else gate.acquire(timeout=30)
            )
            if not opened:
                raise TimeoutError("the test never opened the gate")
        if self.delay:
            time.sleep(self.delay)
        if (x < 0).any():
            raise RuntimeError("negative input in /srv/models/secret/1/model.onnx")
        if (x == 999).any():
            return {"y": (x * 2)[:-1]}
        return {"y": x * 2}

    def unload(self) -> None:
        self.unloaded_on = threading.current_thread().name


def request(value: int, rows: int = 1, **kwargs: Any) -> InferRequest:
    """A request whose every element is ``value`` (x: FP32 [rows, 2])."""
    return InferRequest(inputs={"x": np.full((rows, 2), value, np.float32)}, **kwargs)


def check(outputs: dict[str, np.ndarray], value: int, rows: int = 1) -> None:
    np.testing.assert_array_equal(outputs["y"], np.full((rows, 2), 2 * value, np.float32))


#: ``build(policy, *backends, clock=None)`` -> Scheduler (the ``build`` fixture in conftest.py)
Build = Callable[..., Scheduler]


class FakeClock:
    """A scheduler ``Clock`` whose time moves only when the test calls :meth:`advance`; the
    queue-delay timer and request deadlines then fire, in order, on the calling loop."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._due: list[_Due] = []  # armed timers and pending deadline callbacks

    def clock(self) -> Clock:
        return Clock(now=lambda: self.now, timer=self._timer, later=self._later)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        while True:
            due = [d for d in self._due if d.when is not None and d.when <= self.now]
            if not due:
                return
            first = min(due, key=lambda d: d.when or 0.0)
            first.when = None
            first.callback()

    def _timer(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> _Due:
        due = _Due(callback)
        self._due.append(due)
        return due

    def _later(
        self, loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], None]
    ) -> _Due:
        due = _Due(callback)
        due.arm(self.now + delay)
        self._due.append(due)
        return due


class _Due:
    """A fake timer (``timers.Timer``) or deadline handle: ``callback`` at ``when``."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.when: float | None = None

    def arm(self, when: float) -> None:
        self.when = when

    def cancel(self) -> None:
        self.when = None

    close = cancel


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run (and instance threads deliver their results) until ``condition()``."""
    for _ in range(1_000_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never came true")


async def settle() -> None:
    """Let every callback already scheduled on the loop run (a kick, a cancellation)."""
    for _ in range(5):
        await asyncio.sleep(0)
