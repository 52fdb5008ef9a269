"""The server's end of one Triton-style worker process (``worker.py``).

Start-up is a blocking handshake run off the event loop (``start``): ``init`` -> the
auto-completed config, ``initialize`` -> ready. After it, a reader thread hands every message to
the event loop (``listen``); sends come from the loop under a lock, so frames never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import weakref
from collections.abc import Callable
from typing import Any

from accelserve.backends import python_worker


class WorkerFailure(Exception):
    """The worker failed to start: ``initialize``/import raised, it exited, or it hung."""


class WorkerProcess:
    def __init__(self) -> None:
        self.process, self.conn = python_worker.spawn("accelserve.backends.triton_python.worker")
        self._lock = threading.Lock()
        self._early: list[tuple[str, Any]] = []  # messages during the handshake, for listen()
        self._finalizer = weakref.finalize(self, python_worker.kill, self.process, self.conn)

    # -- the handshake (blocking: call it in a thread) -----------------------------------------

    def handshake(self, kind: str, payload: Any, expect: str, timeout: float) -> Any:
        try:
            self.send(kind, payload)
            while True:
                if not self.conn.poll(timeout):
                    self.kill()
                    raise WorkerFailure(f"did not answer {kind} within {timeout:g} s")
                answer, value = python_worker.recv(self.conn)
                if answer != "metric":
                    break
                self._early.append((answer, value))  # initialize() made a metric
        except (EOFError, OSError):
            raise WorkerFailure(f"the worker process exited ({self.exit_reason()})") from None
        if answer == "init_error":
            type_name, message = value
            raise WorkerFailure(f"{type_name}: {message}" if message else type_name)
        if answer != expect:
            raise WorkerFailure(f"unexpected answer {answer!r} to {kind}")
        return value

    # -- after the handshake --------------------------------------------------------------------

    def listen(
        self,
        loop: asyncio.AbstractEventLoop,
        on_message: Callable[[str, Any], None],
        on_exit: Callable[[str], None],
    ) -> None:
        def read() -> None:
            for kind, payload in self._early:
                loop.call_soon_threadsafe(on_message, kind, payload)
            self._early.clear()
            while True:
                try:
                    kind, payload = python_worker.recv(self.conn)
                except (EOFError, OSError):
                    with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                        loop.call_soon_threadsafe(on_exit, self.exit_reason())
                    return
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(on_message, kind, payload)

        threading.Thread(target=read, name="triton-python-reader", daemon=True).start()

    def send(self, kind: str, payload: Any) -> None:
        with self._lock:
            python_worker.send(self.conn, kind, payload)

    def try_send(self, kind: str, payload: Any) -> None:
        """Send, unless the worker is gone (its reader reports the exit)."""
        with contextlib.suppress(OSError, ValueError):
            self.send(kind, payload)

    def exit_reason(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return "closed its connection and was killed"
        return f"exit code {code}" if code >= 0 else f"killed by signal {-code}"

    def kill(self) -> None:
        self._finalizer()

    @property
    def pid(self) -> int:
        return self.process.pid
