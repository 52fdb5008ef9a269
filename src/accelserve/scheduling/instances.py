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
from typing import Any, Generic, Protocol, TypeVar

from accelserve.devices import Device
from accelserve.errors import UnavailableError
from accelserve.scheduling.activity import CoreActivity
from accelserve.scheduling.batching import Tensors

logger = logging.getLogger(__name__)

#: called on the event loop with (result, None) or (None, exception)
Done = Callable[[Any, BaseException | None], None]

#: after a job shorter than this, the next runs on the event loop's thread (CPU devices only)
INLINE_BELOW_NS = 50_000
_NS = time.perf_counter_ns


class Engine(Protocol):
    """What an instance runs: a loaded backend as scheduling sees it (``backends.base.Backend``
    fits; scheduling never imports it)."""

    @property
    def device(self) -> Device: ...

    @property
    def inline_ok(self) -> bool:
        """Whether a tiny call may run on the event loop's thread (not when it can block on
        another process)."""
        ...

    @property
    def spins_after_call(self) -> bool:
        """Whether its own threads spin-wait after a call, keeping the cores busy."""
        ...

    def infer(self, inputs: Tensors) -> Tensors: ...

    def unload(self) -> None: ...


E = TypeVar("E", bound=Engine)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller went away
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


class ModelInstance(Generic[E]):
    """Runs jobs for one backend instance, one at a time, in FIFO order."""

    def __init__(
        self,
        name: str,
        backend: E,
        inline_below_ns: int = INLINE_BELOW_NS,
        activity: CoreActivity | None = None,
    ) -> None:
        self.name = name
        self.backend = backend
        # The server's (one for all its instances), or this instance's own.
        self.activity = CoreActivity() if activity is None else activity
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
                self.activity.spun()
            loop.call_soon(done, result, exc)
            return
        self._on_thread += 1
        self.activity.handed_off()
        self._jobs.put((job, loop, done))

    def _finished(self, done: Done, result: Any, exc: BaseException | None, ns: int) -> None:
        """On the loop: a job from the thread is back."""
        self._on_thread -= 1
        self.activity.came_back(self._spins)
        self._last_ns = ns
        done(result, exc)

    async def run(self, inputs: Tensors) -> Tensors:
        """Run ``backend.infer(inputs)`` on the worker thread."""
        future: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
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
