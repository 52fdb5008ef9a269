"""One model instance: a loaded backend bound to one device, with its own worker thread.

Calls into the backend (and its unload) happen on that one thread: GPU runtimes keep
per-thread state, and a dedicated thread costs no per-call pool bookkeeping. Results come back
to the event loop with ``call_soon_threadsafe``; backends such as ONNX Runtime release the GIL
while they compute, so instances on the same host run concurrently.

Tiny jobs run inline: on a CPU device, for a backend with ``inline_ok``, when the instance's
previous job took less than ``INLINE_BELOW_NS`` and nothing is queued on its thread, a job runs
on the event loop's thread and its result is delivered with ``call_soon``. The hand-off to a
thread and back (a futex wake, two context switches, a loop wake-up) costs the loop more than
such a job: on `simple` (a ~25 us batch, 16 connections, 2 cores) inline execution cut the
server's CPU per request from ~52 to ~44 us and lifted throughput from ~16k to ~22k req/s
(measured 2026-11-24; results in docs/PERFORMANCE.md, `server-simple`). The first job always runs on the thread, so a slow first call (compilation,
warm-up) never blocks the loop, and after a slow job the next one goes back to the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from accelserve.backends.base import Backend
from accelserve.devices import Device
from accelserve.errors import UnavailableError

logger = logging.getLogger(__name__)

#: called on the event loop with (result, None) or (None, exception)
Done = Callable[[Any, BaseException | None], None]

#: after a job shorter than this, the next runs on the event loop's thread (CPU devices only)
INLINE_BELOW_NS = 50_000
_NS = time.perf_counter_ns
#: how long after a call a backend's own spin-waiting threads are taken to hold the cores
SPIN_AFTER_CALL_NS = 1_000_000
# Process-wide, updated on the event loop's thread (the server runs one loop).
_on_threads = 0  # jobs handed to any instance's thread and not yet back
_spinner_ran_ns = -SPIN_AFTER_CALL_NS  # when a backend with ``spins_after_call`` last ran a job


def cores_busy() -> bool:
    """Whether model work holds the cores: a job on an instance thread, or a job of a backend
    whose threads spin-wait after each call (``Backend.spins_after_call``) within the last
    ``SPIN_AFTER_CALL_NS``. The HTTP server's busy polling yields to both."""
    return _on_threads > 0 or _NS() - _spinner_ran_ns < SPIN_AFTER_CALL_NS


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller went away
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


class ModelInstance:
    """Runs jobs for one backend instance, one at a time, in FIFO order."""

    def __init__(self, name: str, backend: Backend, inline_below_ns: int = INLINE_BELOW_NS) -> None:
        self.name = name
        self.backend = backend
        # Inline execution (see the module doc): never for accelerators, nor for backends that
        # wait on another process.
        inline = backend.device.kind == "cpu" and backend.inline_ok
        self._inline_below_ns = inline_below_ns if inline else 0
        self._spins = backend.spins_after_call
        self._last_ns = math.inf  # how long the previous job took
        self._on_thread = 0  # jobs handed to the thread and not yet reported back
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], asyncio.AbstractEventLoop, Done] | None
        ] = queue.SimpleQueue()
        self._closed = False
        self.execution_count = 0  # jobs (batches) run, on the thread or inline (never both at once)
        self._thread = threading.Thread(target=self._work, name=f"accelserve-{name}", daemon=True)
        self._thread.start()

    @property
    def device(self) -> Device:
        return self.backend.device

    def submit(self, job: Callable[[], Any], done: Done) -> None:
        """Run ``job()`` on the worker thread (or inline, when tiny); ``done`` is then called
        on the current loop, never from within ``submit``."""
        if self._closed:
            raise UnavailableError(f"model instance '{self.name}' is closed")
        loop = asyncio.get_running_loop()
        if self._on_thread == 0 and self._last_ns < self._inline_below_ns:
            result: Any = None
            exc: BaseException | None = None
            start = _NS()
            try:
                result = job()
            except Exception as e:
                exc = e
            end = _NS()
            self._last_ns = end - start
            self.execution_count += 1
            if self._spins:
                global _spinner_ran_ns
                _spinner_ran_ns = end
            loop.call_soon(done, result, exc)
            return
        global _on_threads
        self._on_thread += 1
        _on_threads += 1
        self._jobs.put((job, loop, done))

    def _finished(self, done: Done, result: Any, exc: BaseException | None, ns: int) -> None:
        """On the loop: a job from the thread is back."""
        global _on_threads, _spinner_ran_ns
        self._on_thread -= 1
        _on_threads -= 1
        if self._spins:
            _spinner_ran_ns = _NS()
        self._last_ns = ns
        done(result, exc)

    async def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ``backend.infer(inputs)`` on the worker thread."""
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        backend = self.backend
        self.submit(lambda: backend.infer(inputs), lambda r, e: _settle(future, r, e))
        return await future

    def close(self) -> None:
        """Finish the queued jobs, unload the backend on its own thread, stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._jobs.put(None)
        self._thread.join()

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                break
            job, loop, done = item
            result: Any = None
            exc: BaseException | None = None
            start = _NS()
            try:
                result = job()
            except BaseException as e:  # every waiter must hear back, whatever went wrong
                exc = e
            elapsed = _NS() - start
            self.execution_count += 1
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left waiting
                loop.call_soon_threadsafe(self._finished, done, result, exc, elapsed)
            del item, job, done, result, exc  # hold no batch arrays while idle
        try:
            self.backend.unload()
        except Exception:
            logger.exception("model instance '%s': unload failed", self.name)
