"""Whether model work holds the cores: one ``CoreActivity`` per server, shared by its instances.

The server creates it, hands it to the repository (which gives it to every ``ModelInstance``)
and hands its ``busy`` to the HTTP server's busy polling, which yields to model work
(frontends/busy_poll.py). It is updated and read on the event loop's thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: how long after a call a backend's own spin-waiting threads are taken to hold the cores
SPIN_AFTER_CALL_NS = 1_000_000


class CoreActivity:
    """Counts jobs handed to instance threads and remembers when a spinning backend last ran."""

    def __init__(
        self,
        spin_after_call_ns: int = SPIN_AFTER_CALL_NS,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self._spin_ns = spin_after_call_ns
        self._clock_ns = clock_ns
        self._on_threads = 0  # jobs handed to any instance's thread and not yet back
        self._spinner_ran_ns: int | None = None  # when a spinning backend last ran a job

    def busy(self) -> bool:
        """A job on an instance thread, or a job of a backend whose threads spin-wait after
        each call (``spins_after_call``) within the last ``spin_after_call_ns``."""
        if self._on_threads:
            return True
        ran = self._spinner_ran_ns
        return ran is not None and self._clock_ns() - ran < self._spin_ns

    def handed_off(self) -> None:
        """A job went to an instance's thread."""
        self._on_threads += 1

    def came_back(self, spins: bool) -> None:
        """A job from an instance's thread is back on the loop."""
        self._on_threads -= 1
        if spins:
            self.spun()

    def spun(self) -> None:
        """A backend whose threads spin-wait after a call has just run one."""
        self._spinner_ran_ns = self._clock_ns()
