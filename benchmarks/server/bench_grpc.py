"""Triton's `simple` over gRPC: accelserve (metrics on, and off), Triton, and the grpc.aio floor.

    bash benchmarks/server/peers/setup.sh            # once, for the Triton peer
    .venv/bin/python benchmarks/server/bench_grpc.py [--repeats 3] [--duration 5]

Two phases, with `accelserve.tools.bench` (gRPC, tritonclient's messages, raw tensors) driving each
server from this process at 1, 16 and 64 concurrent streams:

1. Peers, all up together, driven one at a time step by step in an order rotated each round (so
   that all see the same load on a shared machine): accelserve (default settings:
   `/metrics` on, latency histograms counting, scraped once a second by this script: Prometheus
   scrapes every 15 s or more, so this is the harsher case); Triton (the `tritonserver` binary from
   nvidia-pytriton, Python-backend `simple`, benchmarks/server/peers/) when installed; and the
   grpc.aio floor, a bare grpc.aio server on uvloop (this script, `--floor-server`) that parses
   each ModelInferRequest and returns a canned response: the ceiling of any server built on
   grpc.aio with this client on this machine. Also the same canned reply on grpcio's
   thread-pool server (`--sync-floor-server`): the ceiling of a layout on that server.
2. Metrics on vs off, paired: two accelserve servers up at once, one with metrics (scraped once a
   second) and one with `--metrics-port 0` (no endpoint, no histogram counting), driven in
   alternation (on/off, then off/on) level by level, so that both see the same machine load.
   The ratio reported is the median of the per-round ratios.

A third table times the scrape in-process: rendering `/metrics` for 20 loaded models, and how late
a 1 ms event-loop timer fires with and without back-to-back scrapes (rendering runs on a worker
thread). Writes benchmarks/results/bench_grpc_layouts.csv, bench_grpc.png and
docs/PERFORMANCE.md's `server-grpc`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _report  # noqa: E402
from benchmarks.server.bench_grpc_report import report  # noqa: E402
from benchmarks.server.grpc_floor_server import floor_server  # noqa: E402
from benchmarks.server.grpc_peers import (  # noqa: E402
    CONCURRENCY,
    FLOOR,
    LABELS,
    OFF,
    ON,
    SYNC_FLOOR,
    TRITON,
    Running,
    Runs,
    Scraper,
    Step,
    start_server,
)


def drive(server: Running, conc: int, args: argparse.Namespace, stats: bool = True) -> Step:
    from accelserve.tools.bench import BenchSettings, run_bench

    settings = BenchSettings(
        url=f"127.0.0.1:{server.port}",
        model="simple",
        protocol="grpc",
        concurrency=[conc],
        duration_s=args.duration,
        warmup_s=args.warmup,
        server_stats=stats,
    )
    cpu = server.cpu_seconds()
    (step,) = run_bench(settings).steps
    cpu = server.cpu_seconds() - cpu
    if step.failed or step.counts_match is False:
        print(
            f"[bench_grpc] port {server.port} c={conc}: {step.failed} failed, server count "
            f"matches: {step.counts_match}, errors {dict(step.errors)}",
            file=sys.stderr,
        )
    # The CPU covers the warm-up too, which runs at the same concurrency: scale the count.
    requests = step.ok * (args.warmup + args.duration) / args.duration
    return Step(step, cpu / requests * 1e6 if requests else math.nan)


def run_peers(names: list[str], peers: dict[str, Runs], args: argparse.Namespace) -> None:
    """Every peer up at once, driven one at a time step by step, the order rotated each round,
    so that all of them see the same machine load (this machine is shared)."""
    servers: dict[str, Running] = {}
    scrapers: dict[str, Scraper] = {}
    try:
        for name in names:
            print(f"[bench_grpc] starting {LABELS[name]}", file=sys.stderr, flush=True)
            try:
                servers[name] = start_server(name, args.ready_timeout)
            except Exception as exc:  # a peer that is not installed is reported, not fatal
                peers[name].skipped = str(exc).splitlines()[0][:200]
                print(f"[bench_grpc] skipping {name}: {peers[name].skipped}", file=sys.stderr)
                continue
            if servers[name].metrics_port:
                scrapers[name] = Scraper(servers[name].metrics_port)  # type: ignore[arg-type]
                scrapers[name].start()
        up = list(servers)
        for repeat in range(args.repeats):
            for conc in CONCURRENCY:
                shift = (repeat + conc) % len(up)
                for name in up[shift:] + up[:shift]:
                    stats = name not in (FLOOR, SYNC_FLOOR)
                    step = drive(servers[name], conc, args, stats)
                    peers[name].steps.setdefault(conc, []).append(step)
    finally:
        for name, scraper in scrapers.items():
            scraper.stop()
            peers[name].scrapes += scraper.durations
        for server in servers.values():
            server.stop()


def run_pair(on: Runs, off: Runs, args: argparse.Namespace) -> None:
    """Metrics on and off, both up, driven in alternation level by level."""
    print("[bench_grpc] metrics on vs off, paired", file=sys.stderr, flush=True)
    servers = {ON: start_server(ON, args.ready_timeout)}
    try:
        servers[OFF] = start_server(OFF, args.ready_timeout)
        metrics_port = servers[ON].metrics_port
        assert metrics_port is not None
        scraper = Scraper(metrics_port)
        scraper.start()
        try:
            for round_ in range(args.pair_rounds):
                for conc in CONCURRENCY:
                    order = (ON, OFF) if (round_ + conc) % 2 == 0 else (OFF, ON)
                    for name in order:
                        runs = on if name == ON else off
                        runs.steps.setdefault(conc, []).append(drive(servers[name], conc, args))
        finally:
            scraper.stop()
            on.scrapes += scraper.durations
    finally:
        for server in servers.values():
            server.stop()


# --------------------------------------------------------------------- scrape cost, in-process


def scrape_cost(models: int = 20, seconds: float = 2.0) -> dict[str, float]:
    """Render time of /metrics for ``models`` loaded copies of `simple`, and the event loop's
    lag (how late a 1 ms timer fires) with and without back-to-back scrapes."""
    import httpx

    from accelserve.dataplane import DataPlane
    from accelserve.frontends.metrics import generate, start_metrics_server
    from accelserve.repository import ModelRepository
    from accelserve.tools.examples.build import BUILDERS

    config = (ROOT / "examples" / "model_repository" / "simple" / "config.pbtxt").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(models):
            target = Path(tmp) / f"simple{i}"
            target.mkdir()
            (target / "config.pbtxt").write_text(
                config.replace('name: "simple"', f'name: "simple{i}"')
            )
            BUILDERS["simple"](target)

        async def measure() -> dict[str, float]:
            repository = ModelRepository(tmp)
            await repository.load_all()
            dataplane = DataPlane(repository)
            server = await start_metrics_server(dataplane, "127.0.0.1", 0)
            try:
                renders = []
                for _ in range(30):
                    start = time.perf_counter()
                    body = generate(server.registry)
                    renders.append(time.perf_counter() - start)
                idle = await _loop_lag(seconds, None)
                url = f"http://127.0.0.1:{server.port}/metrics"
                busy = await _loop_lag(seconds, url)
                return {
                    "models": models,
                    "bytes": len(body),
                    "render_ms": statistics.median(renders) * 1e3,
                    "scrape_ms": busy["scrape_ms"],
                    "scrapes": busy["scrapes"],
                    "lag_p99_idle_ms": idle["p99"],
                    "lag_max_idle_ms": idle["max"],
                    "lag_p99_busy_ms": busy["p99"],
                    "lag_max_busy_ms": busy["max"],
                }
            finally:
                await server.stop()
                await repository.stop()

        async def _loop_lag(duration: float, url: str | None) -> dict[str, float]:
            stop = threading.Event()
            scrape_times: list[float] = []

            def scrape_forever() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop.is_set():
                        start = time.perf_counter()
                        client.get(url)  # type: ignore[arg-type]
                        scrape_times.append(time.perf_counter() - start)

            thread = threading.Thread(target=scrape_forever) if url else None
            if thread is not None:
                thread.start()
            lags = []
            end = time.perf_counter() + duration
            while time.perf_counter() < end:
                start = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - start - 0.001)
            stop.set()
            if thread is not None:
                await asyncio.to_thread(thread.join)  # its last scrape needs this loop
            lags.sort()
            return {
                "p99": lags[int(len(lags) * 0.99)] * 1e3,
                "max": lags[-1] * 1e3,
                "scrape_ms": statistics.median(scrape_times) * 1e3 if scrape_times else math.nan,
                "scrapes": len(scrape_times),
            }

        import uvloop

        return uvloop.run(measure())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="peer phase repeats")
    parser.add_argument("--pair-rounds", type=int, default=5, help="metrics on/off rounds")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=[TRITON, FLOOR, SYNC_FLOOR])
    parser.add_argument("--no-scrape-cost", action="store_true")
    parser.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--sync-floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server or args.sync_floor_server:
        floor_server(args.floor_server or args.sync_floor_server, sync=bool(args.sync_floor_server))
        return 0
    _report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    names = [n for n in (ON, TRITON, FLOOR, SYNC_FLOOR) if n not in args.skip]
    load_before = os.getloadavg()
    peers = {name: Runs(name) for name in names}
    run_peers(names, peers, args)
    on, off = Runs(ON), Runs(OFF)
    run_pair(on, off, args)
    cost = {} if args.no_scrape_cost else scrape_cost()
    args.load = (load_before, os.getloadavg())
    report(peers, on, off, cost, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
