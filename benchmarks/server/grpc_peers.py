"""The servers bench_grpc.py and bench_grpc_floor.py drive over gRPC, and their measurements:
accelserve (metrics on or off), Triton and the canned-reply floors; the /metrics scraper; the
per-step results and their medians.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import _report

# The floors run as `bench_grpc.py --floor-server PORT` (or --sync-floor-server).
BENCH_GRPC = Path(__file__).resolve().with_name("bench_grpc.py")
CONCURRENCY = [1, 16, 64]
ON, OFF, TRITON, FLOOR = "accelserve", "accelserve-metrics-off", "triton", "floor"
SYNC_FLOOR = "floor-sync"
LABELS = {
    ON: "accelserve (metrics on, scraped 1/s)",
    OFF: "accelserve, metrics off",
    TRITON: "Triton 2.x (tritonserver, python backend)",
    FLOOR: "grpc.aio floor (canned reply)",
    SYNC_FLOOR: "grpcio thread-pool floor (canned reply)",
}


# ----------------------------------------------------------------------------- servers


def cpu_by_process(pid: int) -> dict[int, float]:
    """User + system CPU seconds of ``pid`` and each process under it."""
    import psutil

    out = {}
    try:
        root = psutil.Process(pid)
        for proc in (root, *root.children(recursive=True)):
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
    except psutil.NoSuchProcess:
        pass
    return out


@dataclass
class Running:
    port: int
    stop: Any  # () -> None
    pid: int
    metrics_port: int | None = None

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and every process it spawned (Triton's stubs)."""
        return sum(cpu_by_process(self.pid).values())


def start_server(name: str, ready_timeout: float) -> Running:
    from benchmarks.server.peers.launch import free_port, start

    if name in (FLOOR, SYNC_FLOOR):
        port = free_port()
        log = open(_report.result_path(f"{name}-server.log"), "wb")  # noqa: SIM115 - closed with the process
        flag = "--floor-server" if name == FLOOR else "--sync-floor-server"
        proc = subprocess.Popen(
            [sys.executable, str(BENCH_GRPC), flag, str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_grpc(port, proc, ready_timeout)

        def stop() -> None:
            proc.terminate()
            proc.wait(30)
            log.close()

        return Running(port, stop, proc.pid)
    metrics_port = None
    if name == ON:
        metrics_port = free_port()
        os.environ["ACCELSERVE_ARGS"] = f"--metrics-port {metrics_port}"
    elif name == OFF:
        os.environ["ACCELSERVE_ARGS"] = "--metrics-port 0"
    peer = start("accelserve" if name in (ON, OFF) else name, ready_timeout=ready_timeout)
    os.environ.pop("ACCELSERVE_ARGS", None)
    assert peer.grpc_port is not None
    return Running(peer.grpc_port, peer.stop, peer.proc.pid, metrics_port)


def wait_grpc(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import grpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"floor server exited with {proc.returncode}")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=1)
                return
            except grpc.FutureTimeoutError:
                pass
    raise RuntimeError("floor server not ready")


class Scraper(threading.Thread):
    """GET /metrics once a second; records how long each scrape took."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.durations: list[float] = []
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(1.0):
            start = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    response.read()
                self.durations.append(time.perf_counter() - start)
            except OSError:
                self.failures += 1

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --------------------------------------------------------------------------------- runs


@dataclass
class Step:
    result: Any  # loadgen StepResult
    server_us: float  # server CPU per request (all its processes and threads)
    busiest: float = math.nan  # the busiest process's share of the server's CPU (floors only)


def step_value(step: Step, what: str) -> float:
    result = step.result
    if what == "rps":
        return float(result.throughput)
    if what == "client_us":
        return float(result.client_cpu_us)
    if what in ("server_us", "busiest"):
        return float(getattr(step, what))
    if what == "batch":
        delta = result.server
        return delta.inferences / delta.executions if delta and delta.executions else math.nan
    return float(getattr(result.latency, what)) * 1e3


@dataclass
class StepRuns:
    """One server's steps by concurrency, over the rounds."""

    steps: dict[int, list[Step]] = field(default_factory=dict, kw_only=True)

    def med(self, conc: int, what: str) -> float:
        values = [step_value(step, what) for step in self.steps.get(conc, [])]
        return statistics.median(values) if values else math.nan

    def failed(self, conc: int) -> int:
        return sum(step.result.failed for step in self.steps.get(conc, []))


@dataclass
class Runs(StepRuns):
    name: str
    scrapes: list[float] = field(default_factory=list)
    skipped: str = ""
