"""One model instance: a loaded backend bound to one device, with its own worker thread.

Every call into the backend (and its unload) happens on that one thread: GPU runtimes keep
per-thread state, and a dedicated thread costs no per-call pool bookkeeping. Results come back
to the event loop with ``call_soon_threadsafe``; backends such as ONNX Runtime release the GIL
while they compute, so instances on the same host run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from accelserve.backends.base import Backend
from accelserve.devices import Device
from accelserve.errors import UnavailableError

logger = logging.getLogger(__name__)

#: called on the event loop with (result, None) or (None, exception)
Done = Callable[[Any, BaseException | None], None]


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller went away
        return
    if exc is None:
        future.set_result(result)
    else:
        future.set_exception(exc)


class ModelInstance:
    """Runs jobs for one backend instance, one at a time, in FIFO order."""

    def __init__(self, name: str, backend: Backend) -> None:
        self.name = name
        self.backend = backend
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], asyncio.AbstractEventLoop, Done] | None
        ] = queue.SimpleQueue()
        self._closed = False
        self.execution_count = 0  # jobs (batches) run; written only by the worker thread
        self._thread = threading.Thread(target=self._work, name=f"accelserve-{name}", daemon=True)
        self._thread.start()

    @property
    def device(self) -> Device:
        return self.backend.device

    def submit(self, job: Callable[[], Any], done: Done) -> None:
        """Run ``job()`` on the worker thread; ``done`` is then called on the current loop."""
        if self._closed:
            raise UnavailableError(f"model instance '{self.name}' is closed")
        self._jobs.put((job, asyncio.get_running_loop(), done))

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
            try:
                result = job()
            except BaseException as e:  # every waiter must hear back, whatever went wrong
                exc = e
            self.execution_count += 1
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is left waiting
                loop.call_soon_threadsafe(done, result, exc)
            del item, job, done, result, exc  # hold no batch arrays while idle
        try:
            self.backend.unload()
        except Exception:
            logger.exception("model instance '%s': unload failed", self.name)
