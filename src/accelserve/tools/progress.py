"""A small progress display for long set-up work (exports, example builds).

Each step prints ``[n] what ...`` and then its duration when it ends. On a terminal, a ticker
thread rewrites the line every half second with the elapsed time, so a 20-second export does
not look hung; into a file or pipe, each step is one plain line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Step:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        """Add a detail shown after the step's duration (sizes, checks)."""
        self.notes.append(text)


class Progress:
    """Writes to ``stream`` (None: silent)."""

    def __init__(self, stream: TextIO | None, prefix: str = "accelserve") -> None:
        self.stream = stream
        self.prefix = prefix
        self.count = 0
        self._tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())

    def message(self, text: str) -> None:
        if self.stream is not None:
            print(f"[{self.prefix}] {text}", file=self.stream, flush=True)

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        self.count += 1
        step = Step()
        stream = self.stream
        head = f"[{self.prefix} {self.count}] {title}"
        start = time.perf_counter()
        stop = threading.Event()
        ticker = None
        if stream is not None:
            if self._tty:
                ticker = threading.Thread(target=self._tick, args=(head, start, stop), daemon=True)
                ticker.start()
            else:
                print(f"{head} ...", file=stream, flush=True)
        failed = True
        try:
            yield step
            failed = False
        finally:
            stop.set()
            if ticker is not None:
                ticker.join()
            if stream is not None:
                elapsed = time.perf_counter() - start
                status = "failed" if failed else "done"
                notes = f"; {'; '.join(step.notes)}" if step.notes else ""
                end = f"{status} in {elapsed:.1f} s{notes}"
                if self._tty:
                    print(f"\r\033[K{head} ... {end}", file=stream, flush=True)
                else:
                    print(f"{head}: {end}", file=stream, flush=True)

    def _tick(self, head: str, start: float, stop: threading.Event) -> None:
        assert self.stream is not None
        spinner = "|/-\\"
        n = 0
        while not stop.wait(0.5 if n else 0.0):
            elapsed = time.perf_counter() - start
            self.stream.write(f"\r\033[K{head} ... {spinner[n % 4]} {elapsed:.0f} s")
            self.stream.flush()
            n += 1
