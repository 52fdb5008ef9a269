"""Drive load: a concurrency sweep (N clients, each waiting for its answer before the next
request) or a fixed request rate (open loop), one measured step per level.

What a step counts (so its numbers compare exactly with the server's ``/stats``):

1. warm-up at the step's load for ``warmup_s``; then every warm-up request is awaited;
2. first ``/stats`` snapshot, with nothing of ours in flight;
3. the measured window opens when the first request is sent; requests are *issued* until the
   duration (or the request budget) is spent, and every issued request is awaited;
4. the window closes with the last response; second ``/stats`` snapshot.

So the step's ``ok + failed`` is every request issued in the window, and equals the server's
``success + fail`` delta unless another client used the model at the same time (or a request
never reached the server: refused connection). Throughput is ``ok / window``; the window includes
the final drain (at most one request latency). Latency percentiles are over successful requests.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from accelserve.tools.bench.serverstats import ServerDelta, StatsSnapshot, delta, snapshot
from accelserve.tools.bench.sweep import LatencySummary
from accelserve.tools.bench.transport import Session, Transport

STATS_SETTLE_S = 1.0  # how long to wait for the server's counters to catch up with our count
MAX_OPEN_LOOP_CONNECTIONS = 512  # a rate the server cannot keep up with must not exhaust sockets
clock: Callable[[], float] = time.perf_counter  # every time the runner reads; tests fake it


@dataclass
class StepResult:
    mode: str  # "concurrency" or "rate"
    level: float
    ok: int
    failed: int
    duration_s: float
    latency: LatencySummary
    errors: dict[str, int]
    batch_size: int = 1
    late: int = 0  # rate mode: requests sent more than 1 ms after their scheduled time
    client_cpu_us: float = math.nan  # load generator CPU per request (all threads)
    server: ServerDelta | None = None

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def counts_match(self) -> bool | None:
        return None if self.server is None else self.server.total == self.ok + self.failed


@dataclass
class _Recorder:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    late: int = 0
    last_done: float = 0.0

    @property
    def done(self) -> int:
        return len(self.latencies) + self.failed


class _Budget:
    """Whether another request may be issued: until a deadline, or N requests in all."""

    __slots__ = ("deadline", "remaining")

    def __init__(self, deadline: float, remaining: int | None) -> None:
        self.deadline, self.remaining = deadline, remaining

    def take(self, now: float) -> bool:
        if self.remaining is None:
            return now < self.deadline
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


async def _closed_loop(
    session: Session, sets: int, start: int, rec: _Recorder, budget: _Budget
) -> None:
    perf = clock
    latencies, i = rec.latencies, start
    t0 = perf()
    while budget.take(t0):
        error = await session.infer(i % sets)
        t1 = perf()
        if error is None:
            latencies.append(t1 - t0)
        else:
            rec.failed += 1
            rec.errors[error] += 1
        rec.last_done = t1
        i += 1
        t0 = t1


async def _open_loop(
    transport: Transport,
    idle: list[Session],
    rate: float,
    poisson: bool,
    sets: int,
    rec: _Recorder,
    budget: _Budget,
    rng: random.Random,
) -> None:
    """Send on schedule; each request takes an idle connection or opens one (up to a cap;
    past it, requests wait for a connection and show up as late)."""
    perf = clock
    pending: set[asyncio.Task[None]] = set()
    returned = asyncio.Event()
    opened = len(idle)

    async def one(session: Session, index: int) -> None:
        t0 = perf()
        error = await session.infer(index)
        t1 = perf()
        if error is None:
            rec.latencies.append(t1 - t0)
        else:
            rec.failed += 1
            rec.errors[error] += 1
        rec.last_done = t1
        idle.append(session)
        returned.set()

    due, i = perf(), 0
    while budget.take(due):
        wait = due - perf()
        if wait > 0:
            await asyncio.sleep(wait)
        while not idle and opened >= MAX_OPEN_LOOP_CONNECTIONS:
            returned.clear()
            await returned.wait()
        if idle:
            session = idle.pop()
        else:
            session = transport.session()
            opened += 1
        if perf() - due > 1e-3:
            rec.late += 1
        task = asyncio.ensure_future(one(session, i % sets))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
        due += rng.expovariate(rate) if poisson else 1.0 / rate
    if pending:
        await asyncio.gather(*pending)


class Progress:
    """One status line on stderr: rewritten in place on a terminal, printed per step otherwise."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())

    def show(self, text: str, final: bool = False) -> None:
        if self.stream is None:
            return
        if self.tty:
            self.stream.write("\r\x1b[2K" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()


@dataclass
class LoadSpec:
    duration_s: float | None = 10.0  # per step; None when `requests` is given
    requests: int | None = None  # per step
    warmup_s: float = 1.0
    batch_size: int = 1
    poisson: bool = False
    seed: int = 0


class Runner:
    def __init__(
        self,
        transport: Transport,
        model: str,
        version: str,
        sets: int,
        spec: LoadSpec,
        server_stats: bool = True,
        progress: Progress | None = None,
    ) -> None:
        self.transport, self.model, self.version = transport, model, version
        self.sets, self.spec, self.server_stats = sets, spec, server_stats
        self.progress = progress or Progress(None)
        self._sessions: list[Session] = []
        self.stats_note = ""

    async def _snapshot(self) -> StatsSnapshot | None:
        if not self.server_stats:
            return None
        stats = await self.transport.stats()
        if stats is None:
            self.server_stats = False
            self.stats_note = "the server has no statistics endpoint: no server-side breakdown"
            return None
        return snapshot(stats, self.model, self.version)

    async def _settled_delta(self, before: StatsSnapshot | None, issued: int) -> ServerDelta | None:
        """Server counters are updated just after the response is written: poll briefly."""
        if before is None:
            return None
        deadline = clock() + STATS_SETTLE_S
        while True:
            after = await self._snapshot()
            if after is None:
                return None
            d = delta(before, after)
            if d.total >= issued or clock() > deadline:
                return d
            await asyncio.sleep(0.01)

    async def _drive(self, mode: str, level: float, budget: _Budget, rec: _Recorder) -> None:
        if mode == "concurrency":
            n = int(level)
            while len(self._sessions) < n:
                self._sessions.append(self.transport.session())
            await asyncio.gather(
                *(
                    _closed_loop(s, self.sets, k, rec, budget)
                    for k, s in enumerate(self._sessions[:n])
                )
            )
        else:
            rng = random.Random(self.spec.seed)
            await _open_loop(
                self.transport,
                self._sessions,
                level,
                self.spec.poisson,
                self.sets,
                rec,
                budget,
                rng,
            )

    async def _ticker(self, label: str, rec: _Recorder, t0: float, total: str) -> None:
        while True:
            await asyncio.sleep(0.5)
            elapsed = clock() - t0
            rate = rec.done / elapsed if elapsed > 0 else 0.0
            self.progress.show(
                f"{label}: {elapsed:5.1f}{total} s  {rec.done} requests  {rate:,.0f}/s  "
                f"{rec.failed} failed"
            )

    async def step(self, mode: str, level: float) -> StepResult:
        label = f"{'concurrency' if mode == 'concurrency' else 'rate'} {level:g}"
        spec = self.spec
        if spec.warmup_s > 0:
            self.progress.show(f"{label}: warming up {spec.warmup_s:g} s")
            warm = _Budget(clock() + spec.warmup_s, None)
            await self._drive(mode, level, warm, _Recorder())
        before = await self._snapshot()
        rec = _Recorder()
        cpu0 = time.process_time()
        t0 = clock()
        duration = spec.duration_s if spec.requests is None else math.inf
        budget = _Budget(t0 + (duration or 0.0), spec.requests)
        total = f"/{duration:g}" if spec.requests is None else ""
        ticker = asyncio.ensure_future(self._ticker(label, rec, t0, total))
        try:
            await self._drive(mode, level, budget, rec)
        finally:
            ticker.cancel()
        end = rec.last_done or clock()
        cpu = time.process_time() - cpu0
        issued = rec.done
        server = await self._settled_delta(before, issued)
        result = StepResult(
            mode=mode,
            level=level,
            ok=len(rec.latencies),
            failed=rec.failed,
            duration_s=end - t0,
            latency=LatencySummary.of(rec.latencies),
            errors=dict(rec.errors.most_common()),
            batch_size=spec.batch_size,
            late=rec.late,
            client_cpu_us=cpu / issued * 1e6 if issued else math.nan,
            server=server,
        )
        self.progress.show(
            f"{label}: {result.ok} ok, {result.failed} failed, {result.throughput:,.0f} req/s, "
            f"p99 {result.latency.p99 * 1e3:.2f} ms",
            final=True,
        )
        return result

    async def run(
        self, mode: str, levels: list[float], on_step: Callable[[StepResult], None] | None = None
    ) -> list[StepResult]:
        results = []
        try:
            for level in levels:
                result = await self.step(mode, level)
                results.append(result)
                if on_step is not None:
                    on_step(result)
        finally:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
        return results


def default_progress() -> Progress:
    return Progress(sys.stderr)
