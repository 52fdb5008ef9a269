"""A one-shot timer on the running event loop that fires on time at microsecond scale.

uvloop (libuv) keeps time in whole milliseconds and rounds ``call_later`` delays to the nearest
one: a 100 us queue delay fires at once, and a batcher that then re-checks its deadline spins
the loop until the delay has passed (measured on `simple` at concurrency 1: ~230 us of CPU per
request instead of ~60). On Linux the timer is a timerfd (``CLOCK_MONOTONIC``, the clock of
``time.monotonic()``) that the loop watches like a socket, so the loop sleeps until the deadline.
Elsewhere it falls back to the loop's timer with the delay rounded up to a millisecond: late by
under a millisecond, never early and never spinning.

``Clock`` bundles the time source and the timers a scheduler uses, so tests can drive a
scheduler's queue delays and timeouts with a fake clock instead of waiting.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

_CLOCK_MONOTONIC = 1
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_long) != 8:
        return None  # timespec's time_t is a long only on 64-bit Linux
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


class Timer(Protocol):
    """A one-shot, re-armable timer at a deadline of its clock (``PreciseTimer``'s interface)."""

    def arm(self, when: float) -> None: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class PreciseTimer:
    """Calls ``callback()`` on ``loop`` at a ``time.monotonic()`` deadline; re-armable."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self.loop = loop
        self._callback = callback
        self._fd = -1
        self._handle: asyncio.TimerHandle | None = None
        if _libc is not None:
            fd = _libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                self._spec = _Itimerspec()
                self._spec_ref = ctypes.byref(self._spec)
                loop.add_reader(fd, self._fired)

    @property
    def precise(self) -> bool:
        return self._fd >= 0

    def arm(self, when: float) -> None:
        """Fire at ``when`` (``time.monotonic()`` seconds), replacing any earlier arming."""
        if self._fd >= 0:
            ns = max(1, int(when * 1e9))  # 0 would disarm the timerfd
            value = self._spec.it_value
            value.tv_sec, value.tv_nsec = divmod(ns, 1_000_000_000)
            _libc.timerfd_settime(self._fd, _TFD_TIMER_ABSTIME, self._spec_ref, None)  # type: ignore[union-attr]
            return
        if self._handle is not None:
            self._handle.cancel()
        delay = when - time.monotonic()
        delay = math.ceil(delay * 1000) / 1000 if delay > 0 else 0.0
        self._handle = self.loop.call_later(delay, self._fire_fallback)

    def cancel(self) -> None:
        if self._fd >= 0:
            self._spec.it_value.tv_sec = self._spec.it_value.tv_nsec = 0
            _libc.timerfd_settime(self._fd, 0, self._spec_ref, None)  # type: ignore[union-attr]
            self._drain()
        elif self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        self.cancel()
        if self._fd >= 0:
            self.loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _drain(self) -> bool:
        """Consume an expiration; False when there was none (cancelled or re-armed)."""
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return False
        return True

    def _fired(self) -> None:
        if self._drain():
            self._callback()

    def _fire_fallback(self) -> None:
        self._handle = None
        self._callback()


class Cancellable(Protocol):
    def cancel(self) -> None: ...


def _call_later(
    loop: asyncio.AbstractEventLoop, delay: float, callback: Callable[[], None]
) -> Cancellable:
    return loop.call_later(delay, callback)


@dataclass(frozen=True, slots=True)
class Clock:
    """Where a scheduler reads the time and sets its timers.

    ``now`` is in seconds (``time.monotonic()``); ``timer(loop, callback)`` makes the queue-delay
    timer (armed at a ``now`` deadline); ``later(loop, delay, callback)`` calls back ``delay``
    seconds from now (a request's queue timeout: rare, so the loop's own timer).
    """

    now: Callable[[], float] = time.monotonic
    timer: Callable[[asyncio.AbstractEventLoop, Callable[[], None]], Timer] = PreciseTimer
    later: Callable[[asyncio.AbstractEventLoop, float, Callable[[], None]], Cancellable] = (
        _call_later
    )
