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
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _report  # noqa: E402

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


# ----------------------------------------------------------------------- the floor server


def floor_server(port: int, sync: bool = False, reuse_port: bool = False) -> None:
    """A grpc.aio server (or with ``sync``, grpcio's thread-pool server) that does the least a
    V2 server can: parse, answer a canned reply. ``reuse_port``: share the port with other
    processes (SO_REUSEPORT), as bench_grpc_floor.py's multi-process floors do."""
    import concurrent.futures as cf

    import grpc
    import numpy as np
    import uvloop

    from accelserve.protocol import grpc_service_pb2 as pb
    from accelserve.protocol.model_config_pb2 import DataType, ModelConfig

    tensor = pb.ModelMetadataResponse.TensorMetadata
    metadata = pb.ModelMetadataResponse(
        name="simple",
        versions=["1"],
        platform="floor",
        inputs=[tensor(name=f"INPUT{i}", datatype="INT32", shape=[-1, 16]) for i in (0, 1)],
        outputs=[tensor(name=f"OUTPUT{i}", datatype="INT32", shape=[-1, 16]) for i in (0, 1)],
    ).SerializeToString()
    config = ModelConfig(name="simple", max_batch_size=8)
    for i in (0, 1):
        config.input.add(name=f"INPUT{i}", data_type=DataType.TYPE_INT32, dims=[16])
        config.output.add(name=f"OUTPUT{i}", data_type=DataType.TYPE_INT32, dims=[16])
    config_reply = pb.ModelConfigResponse(config=config).SerializeToString()
    reply = pb.ModelInferResponse(model_name="simple", model_version="1")
    for i in (0, 1):
        reply.outputs.add(name=f"OUTPUT{i}", datatype="INT32", shape=[1, 16])
        reply.raw_output_contents.append(np.zeros(16, np.int32).tobytes())
    canned = reply.SerializeToString()

    async def infer(data: bytes, context: object) -> bytes:
        pb.ModelInferRequest.FromString(data)
        return canned

    def fixed(reply: bytes) -> Any:
        async def handler(data: bytes, context: object) -> bytes:
            return reply

        return handler

    def sync_handlers() -> dict[str, Any]:
        def sync_infer(data: bytes, context: object) -> bytes:
            pb.ModelInferRequest.FromString(data)
            return canned

        def sync_fixed(reply: bytes) -> Any:
            return lambda data, context: reply

        return {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(sync_infer),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(sync_fixed(metadata)),
            "ModelConfig": grpc.unary_unary_rpc_method_handler(sync_fixed(config_reply)),
        }

    service = "inference.GRPCInferenceService"
    if sync:  # as many workers as a thread-pool layout would need for 64+ streams
        server = grpc.server(
            cf.ThreadPoolExecutor(128), options=[("grpc.so_reuseport", int(reuse_port))]
        )
        handlers = sync_handlers()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", int(reuse_port))])
        handlers = {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
            "ModelMetadata": grpc.unary_unary_rpc_method_handler(fixed(metadata)),
            "ModelConfig": grpc.unary_unary_rpc_method_handler(fixed(config_reply)),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


# ----------------------------------------------------------------------------- servers


@dataclass
class Running:
    port: int
    stop: Any  # () -> None
    pid: int
    metrics_port: int | None = None

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and every process it spawned (Triton's stubs)."""
        import psutil

        total = 0.0
        try:
            root = psutil.Process(self.pid)
            for proc in (root, *root.children(recursive=True)):
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
        return total


def start_server(name: str, ready_timeout: float) -> Running:
    from benchmarks.server.peers.launch import free_port, start

    if name in (FLOOR, SYNC_FLOOR):
        port = free_port()
        log = open(_report.result_path(f"{name}-server.log"), "wb")  # noqa: SIM115 - closed with the process
        flag = "--floor-server" if name == FLOOR else "--sync-floor-server"
        proc = subprocess.Popen(
            [sys.executable, __file__, flag, str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_grpc(port, proc, ready_timeout)

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


def _wait_grpc(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
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
class Runs:
    name: str
    steps: dict[int, list[Step]] = field(default_factory=dict)
    scrapes: list[float] = field(default_factory=list)
    skipped: str = ""

    def med(self, conc: int, what: str) -> float:
        values = [_value(step, what) for step in self.steps.get(conc, [])]
        return statistics.median(values) if values else math.nan

    def failed(self, conc: int) -> int:
        return sum(step.result.failed for step in self.steps.get(conc, []))


def _value(step: Step, what: str) -> float:
    result = step.result
    if what == "rps":
        return float(result.throughput)
    if what == "client_us":
        return float(result.client_cpu_us)
    if what == "server_us":
        return step.server_us
    if what == "batch":
        delta = result.server
        return delta.inferences / delta.executions if delta and delta.executions else math.nan
    return float(getattr(result.latency, what)) * 1e3


@dataclass
class Step:
    result: Any  # loadgen StepResult
    server_us: float  # server CPU per request (all its processes and threads)


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
            server.stop()  # type: ignore[operator]


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
            server.stop()  # type: ignore[operator]


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


# ------------------------------------------------------------------------------- report


def _fmt(x: float, nd: int = 0) -> str:
    return "-" if math.isnan(x) else f"{x:,.{nd}f}"


def _ratio(a: float, b: float) -> str:
    return "-" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"


def _plain(a: float, b: float) -> float | str:
    return "" if math.isnan(a) or math.isnan(b) or b == 0 else round(a / b, 3)


def report(
    peers: dict[str, Runs], on: Runs, off: Runs, cost: dict[str, float], args: argparse.Namespace
) -> None:
    triton, floor = peers.get(TRITON), peers.get(FLOOR)
    header = ["server", "conc", "req/s", "p50 ms", "p99 ms", "failed", "server CPU us/req"]
    header += ["mean batch"]
    header += ["client CPU us/req"]
    header += ["req/s vs Triton", "req/s vs floor"]
    rows, csv_rows = [], []
    for runs in peers.values():
        if not runs.steps:
            rows.append([LABELS[runs.name], "-", f"skipped: {runs.skipped}"] + [""] * 8)
            continue
        for conc in CONCURRENCY:
            rps = runs.med(conc, "rps")
            t_rps = triton.med(conc, "rps") if triton else math.nan
            f_rps = floor.med(conc, "rps") if floor else math.nan
            rows.append(
                [
                    LABELS[runs.name],
                    conc,
                    _fmt(rps),
                    _fmt(runs.med(conc, "p50"), 2),
                    _fmt(runs.med(conc, "p99"), 2),
                    runs.failed(conc),
                    _fmt(runs.med(conc, "server_us")),
                    _fmt(runs.med(conc, "batch"), 2),
                    _fmt(runs.med(conc, "client_us")),
                    _ratio(rps, t_rps),
                    _ratio(rps, f_rps),
                ]
            )
            csv_rows.append(_csv_row("peers", runs, conc, vs_triton=_plain(rps, t_rps)))
    pair_rows = []
    for conc in CONCURRENCY:
        ratios = [
            a.result.throughput / b.result.throughput
            for a, b in zip(on.steps.get(conc, []), off.steps.get(conc, []), strict=False)
            if b.result.throughput
        ]
        ratio = statistics.median(ratios) if ratios else math.nan
        pair_rows.append(
            [
                conc,
                _fmt(on.med(conc, "rps")),
                _fmt(off.med(conc, "rps")),
                "-" if math.isnan(ratio) else f"{100 * (ratio - 1):+.1f}%",
                ", ".join(f"{100 * (r - 1):+.1f}" for r in ratios),
                f"{_fmt(on.med(conc, 'p99'), 2)} / {_fmt(off.med(conc, 'p99'), 2)}",
                f"{_fmt(on.med(conc, 'server_us'))} / {_fmt(off.med(conc, 'server_us'))}",
                on.failed(conc) + off.failed(conc),
            ]
        )
        for runs in (on, off):
            if runs.steps.get(conc):
                csv_rows.append(_csv_row("metrics-pair", runs, conc, on_vs_off=_plain(ratio, 1.0)))
    # bench_grpc.csv has no mean_batch column: a new file
    _report.append_csv(_report.result_path("bench_grpc_layouts.csv"), csv_rows)
    scrape_ms = statistics.median(on.scrapes) * 1e3 if on.scrapes else math.nan
    pair_header = ["conc", "on req/s", "off req/s", "on vs off (median of rounds)"]
    pair_header += ["each round, %", "p99 ms on / off", "server CPU us/req on / off", "failed"]
    pair_table = _report.markdown_table(pair_header, pair_rows)
    markdown = f"""### `simple` over gRPC (issue 5)

`{_report.command_line()}` on {_report.machine()}; commit {_report.commit()}, {_report.today()}.
Load generator: `accelserve.tools.bench` (grpc.aio, tritonclient's messages, raw tensors) in the
benchmark's process, on the same cores as the server; {args.duration:g} s per step after
{args.warmup:g} s warm-up. Peers: medians of {args.repeats} rounds; all servers up together,
driven one at a time step by step in an order rotated each round, so that all see the same
machine load (load average {_load(args)}). accelserve runs with its defaults (metrics on,
scraped once a second). Mean
batch: the server's inferences per model execution over the step (its statistics).

{_report.markdown_table(header, rows)}

Metrics on vs off, the two servers up together and driven in alternation, {args.pair_rounds}
rounds (on: `/metrics` scraped once a second, median scrape {_fmt(scrape_ms, 1)} ms; off:
`--metrics-port 0`, so no histogram counting either):

{pair_table}

Scrape cost in-process (uvloop; `/metrics` rendered on the endpoint's worker thread):

{_cost_table(cost)}

The grpc.aio floor parses each request and returns a canned reply: the most any server built on
grpc.aio reaches with this client on this machine. Its gap to Triton is grpc.aio's own per-RPC
cost in Python (tasks, the completion-queue poller thread, event-loop wake-ups), which Triton's
C++ server does not pay; accelserve's gap to the floor is the data plane, the batcher and ONNX
Runtime. The grpcio thread-pool floor is the same canned reply on grpcio's synchronous server
(128 workers): the ceiling of a layout that parses, decodes, encodes and serializes on those
workers and hands only the data-plane call to the event loop. Client CPU
per request is the load generator's (all its threads).
"""
    _report.write_section("server-grpc", markdown)
    _png(peers, _report.result_path("bench_grpc.png"))
    print(markdown)


def _csv_row(phase: str, runs: Runs, conc: int, **extra: object) -> dict[str, object]:
    values = sorted(_value(s, "rps") for s in runs.steps[conc])
    return {
        "scenario": "simple-grpc",
        "phase": phase,
        "server": runs.name,
        "concurrency": conc,
        "repeats": len(values),
        "rps_p20": round(values[int(0.2 * (len(values) - 1))], 1),
        "rps_p50": round(runs.med(conc, "rps"), 1),
        "rps_p80": round(values[math.ceil(0.8 * (len(values) - 1))], 1),
        "lat_p50_ms": round(runs.med(conc, "p50"), 3),
        "lat_p99_ms": round(runs.med(conc, "p99"), 3),
        "server_cpu_us": round(runs.med(conc, "server_us"), 1),
        "mean_batch": round(runs.med(conc, "batch"), 2),
        "failed": runs.failed(conc),
        "vs_triton": extra.get("vs_triton", ""),
        "on_vs_off": extra.get("on_vs_off", ""),
        "device": "cpu",
        "machine": _report.machine(),
        "commit": _report.commit(),
        "date": _report.today(),
    }


def _load(args: argparse.Namespace) -> str:
    before, after = getattr(args, "load", ((math.nan,) * 3, (math.nan,) * 3))
    return f"{before[0]:.1f} at the start, {after[0]:.1f} at the end, 1-minute"


def _cost_table(cost: dict[str, float]) -> str:
    if not cost:
        return "(not measured)"
    header = ["models", "body KiB", "render ms", "scrape ms", "timer lag p99 / max ms"]
    header += ["same, during back-to-back scrapes"]
    row = [
        int(cost["models"]),
        _fmt(cost["bytes"] / 1024, 1),
        _fmt(cost["render_ms"], 2),
        _fmt(cost["scrape_ms"], 2),
        f"{cost['lag_p99_idle_ms']:.2f} / {cost['lag_max_idle_ms']:.2f}",
        f"{cost['lag_p99_busy_ms']:.2f} / {cost['lag_max_busy_ms']:.2f} "
        f"({int(cost['scrapes'])} scrapes)",
    ]
    return _report.markdown_table(header, [row])


def _png(all_runs: dict[str, Runs], path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in all_runs.values() if r.steps]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    width = 0.8 / max(1, len(measured))
    for k, runs in enumerate(measured):
        xs = [i + k * width for i in range(len(CONCURRENCY))]
        axes[0].bar(xs, [runs.med(c, "rps") for c in CONCURRENCY], width, label=LABELS[runs.name])
        axes[1].bar(xs, [runs.med(c, "p99") for c in CONCURRENCY], width, label=LABELS[runs.name])
    for ax, title in zip(
        axes, ("throughput (req/s, median)", "p99 latency (ms, median)"), strict=True
    ):
        ax.set_xticks([i + width * (len(measured) - 1) / 2 for i in range(len(CONCURRENCY))])
        ax.set_xticklabels([f"{c} streams" for c in CONCURRENCY])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("`simple` over gRPC, load generator on the same cores")
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
