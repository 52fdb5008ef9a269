"""Busy polling: after an HTTP response, the event loop keeps polling its sockets for a short
window instead of sleeping in ``epoll_wait``.

On a virtual machine an idle vCPU halts, and waking it (an interrupt through the hypervisor,
then the scheduler) adds tens of microseconds to every request that finds the server asleep.
A closed-loop client at low concurrency meets that on every request: on the 2-core development
VM, `simple` over HTTP at concurrency 1 serves 12.2k req/s with busy polling and 8.1k without
(benchmarks/server/bench_simple.py, both in one run; PERFORMANCE.md ``server-simple``). ONNX
Runtime hides the cost by spinning its own thread pool after each call. The numbers below that
are not from that benchmark come from single `accelserve bench` runs made while designing this,
and are not recorded benchmarks. While the window is open a callback re-schedules
itself with ``call_soon``; a loop with ready callbacks polls its sockets with a zero timeout, so
the next request is read as soon as it arrives. The window closes ``window_us`` after the last
response, so an idle server sleeps and uses no CPU, and a busy one never sleeps anyway.
Polling pauses while a job runs on an instance's thread (a long CPU batch, a GPU stream, the
Python backend's worker): that job needs the cores more than the loop does, and its completion
wakes the loop anyway. It also stands aside for a millisecond after a call into a backend whose
own threads spin-wait (ONNX Runtime's intra-op pool): they already keep the cores awake, and a
polling loop on top of them only competed with them and the client (in those runs, ONNX Runtime's
MLP fell from 10.8k to 9.6k req/s at concurrency 1 and 21.7k to 18.7k at 16). Only the HTTP
server touches it: gRPC's sockets belong to grpc's own threads, which a polling loop would only
take cores from (in those runs, 1.66k -> 1.32k req/s at concurrency 1). This is the event-loop form
of Linux's ``SO_BUSY_POLL``: CPU for latency at low load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: default window (server option ``--busy-poll-us``): longer than a client's turn-around
#: between a response and its next request, so a steady stream keeps the loop awake
DEFAULT_WINDOW_US = 200


class BusyPoll:
    """Keeps ``loop`` polling until ``window_us`` after the last :meth:`touch`, except while
    ``cores_busy()`` says model work holds the cores."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        window_us: int,
        cores_busy: Callable[[], bool] = lambda: False,
        clock_ns: Callable[[], int] = time.perf_counter_ns,  # tests pass a fake one
    ) -> None:
        if window_us < 0:
            raise ValueError(f"busy_poll_us: expected >= 0; received {window_us}")
        self._loop = loop
        self._cores_busy = cores_busy
        self._clock_ns = clock_ns
        self._window_ns = window_us * 1000
        self._last_ns = 0
        self._polling = False

    def touch(self) -> None:
        """A response went out: poll until the window after now has passed."""
        if self._window_ns == 0:
            return
        self._last_ns = self._clock_ns()
        if not self._polling:
            self._polling = True
            self._loop.call_soon(self._poll)

    @property
    def polling(self) -> bool:
        return self._polling

    def _poll(self) -> None:
        if not self._cores_busy() and self._clock_ns() - self._last_ns < self._window_ns:
            self._loop.call_soon(self._poll)
        else:
            self._polling = False
