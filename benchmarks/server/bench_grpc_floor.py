"""Can several Python gRPC processes on one port reach Triton on this machine? (issue 16)

    bash benchmarks/server/peers/setup.sh            # once, for the Triton peer
    .venv/bin/python -m benchmarks.server.bench_grpc_floor [--repeats 3] [--duration 3]

Canned-reply floors (grpc_floor_server.floor_server, no model) on 1, 2, 3 grpc.aio processes and 1, 2
grpcio thread-pool processes sharing one port (SO_REUSEPORT) against Triton, all up together and
driven step by step in rotated order (bench_grpc.py's method) at 1, 16 and 64 streams. The kernel
deals connections, not streams, to SO_REUSEPORT listeners, so the floors are driven over
CONNECTIONS connections; Triton both over one (as bench_grpc drives it) and over CONNECTIONS.
Server and client CPU per request come from /proc; the arithmetic table weighs them against the
CPU two cores hold per request at Triton's req/s. Writes benchmarks/results/bench_grpc_floor.csv
and docs/PERFORMANCE.md's `server-grpc-floor`.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _report  # noqa: E402
from benchmarks.server.bench_grpc_report import fmt as _fmt  # noqa: E402
from benchmarks.server.grpc_floor_server import floor_server  # noqa: E402
from benchmarks.server.grpc_peers import (  # noqa: E402
    CONCURRENCY,
    TRITON,
    Running,
    Step,
    StepRuns,
    cpu_by_process,
    start_server,
    wait_grpc,
)

CONNECTIONS = 16  # enough that hashing spreads them evenly over 2 or 3 processes
CORES = os.cpu_count() or 1


@dataclass(frozen=True)
class Peer:
    name: str
    kind: str  # "triton", "aio" (grpc.aio floor) or "sync" (grpcio thread-pool floor)
    procs: int
    connections: int

    @property
    def label(self) -> str:
        what = {"triton": "Triton", "aio": "grpc.aio floor", "sync": "thread-pool floor"}
        procs = "" if self.kind == "triton" else f" x{self.procs}"
        return f"{what[self.kind]}{procs}, {self.connections} conn"


PEERS = [
    Peer("triton-1", "triton", 1, 1),
    Peer("triton-n", "triton", 1, CONNECTIONS),
    *(Peer(f"aio-{n}", "aio", n, CONNECTIONS) for n in (1, 2, 3)),
    *(Peer(f"sync-{n}", "sync", n, CONNECTIONS) for n in (1, 2)),
]


# ------------------------------------------------------------------------ client and servers


def multi_connection_transport(port: int, connections: int) -> Any:
    """The load generator's gRPC transport over ``connections`` separate TCP connections."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    from accelserve.tools.bench.grpc_transport import GrpcSession, GrpcTransport

    class MultiConnectionTransport(GrpcTransport):
        async def open(self) -> None:
            unlimited = 2**31 - 1
            # A local subchannel pool per channel, or gRPC shares one connection among them.
            options = [
                ("grpc.max_send_message_length", unlimited),
                ("grpc.max_receive_message_length", unlimited),
                ("grpc.use_local_subchannel_pool", 1),
            ]
            self.channels = [
                grpc.aio.insecure_channel(self.target, options=options) for _ in range(connections)
            ]
            self.stubs = [service_pb2_grpc.GRPCInferenceServiceStub(c) for c in self.channels]
            self._channel, self._stub = self.channels[0], self.stubs[0]
            self.dealt = 0

        def session(self) -> GrpcSession:
            stub = self.stubs[self.dealt % connections]
            self.dealt += 1
            return GrpcSession(stub.ModelInfer, self._requests, self.timeout)

        async def close(self) -> None:
            for channel in self.channels:
                await channel.close()

    return MultiConnectionTransport("127.0.0.1", port, "simple")


def start_floor(peer: Peer, ready_timeout: float) -> Running:
    """``peer.procs`` floor processes on one port: this script with ``--serve`` in a session of
    its own, which starts the other processes; stopped as a process group."""
    from benchmarks.server.peers.launch import free_port

    port = free_port()
    log = open(_report.result_path(f"{peer.name}-floor.log"), "wb")  # noqa: SIM115 - closed in stop
    cmd = [sys.executable, __file__, "--serve", str(port), "--procs", str(peer.procs)]
    cmd += ["--sync"] if peer.kind == "sync" else []
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop() -> None:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this script created for it
        proc.wait(30)
        log.close()

    try:
        wait_grpc(port, proc, ready_timeout)
        _wait_listeners(proc.pid, port, peer.procs, ready_timeout)
    except Exception:
        stop()
        raise
    return Running(port, stop, proc.pid)


def _wait_listeners(pid: int, port: int, procs: int, timeout: float) -> None:
    """Until all ``procs`` listen on ``port`` (`_wait_grpc` returns once the first does)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        root = psutil.Process(pid)
        listening = sum(
            any(c.laddr.port == port and c.status == "LISTEN" for c in p.net_connections("tcp"))
            for p in (root, *root.children(recursive=True))
        )
        if listening >= procs:
            return
        time.sleep(0.2)
    raise RuntimeError(f"fewer than {procs} processes listen on port {port}")


def serve(port: int, procs: int, sync: bool) -> None:
    cmd = [sys.executable, __file__, "--serve", str(port)] + (["--sync"] if sync else [])
    children = [subprocess.Popen(cmd) for _ in range(procs - 1)]
    try:
        floor_server(port, sync=sync, reuse_port=True)
    finally:
        for child in children:
            child.terminate()


# ------------------------------------------------------------------------------- driving


@dataclass
class Runs(StepRuns):
    peer: Peer


def drive(server: Running, peer: Peer, conc: int, args: argparse.Namespace) -> Step:
    from accelserve.tools.bench import BenchSettings, run_bench

    settings = BenchSettings(
        url=f"127.0.0.1:{server.port}",
        model="simple",
        protocol="grpc",
        concurrency=[conc],
        duration_s=args.duration,
        warmup_s=args.warmup,
        server_stats=peer.kind == "triton",
    )
    many = peer.connections > 1
    transport = multi_connection_transport(server.port, peer.connections) if many else None
    before = cpu_by_process(server.pid)
    (step,) = run_bench(settings, transport=transport).steps
    after = cpu_by_process(server.pid)
    used = [after[p] - before.get(p, 0.0) for p in after]
    if step.failed:
        print(f"[bench_grpc_floor] {peer.name} c={conc}: {step.errors}", file=sys.stderr)
    # The CPU covers the warm-up too, at the same concurrency: scale the count.
    requests = step.ok * (args.warmup + args.duration) / args.duration
    total = sum(used)
    server_us = total / requests * 1e6 if requests else math.nan
    return Step(step, server_us, max(used) / total if total > 0 else math.nan)


def run(runs: dict[str, Runs], args: argparse.Namespace) -> None:
    servers: dict[str, Running] = {}
    try:
        for peer in (r.peer for r in runs.values()):
            print(f"[bench_grpc_floor] starting {peer.label}", file=sys.stderr, flush=True)
            if peer.kind == "triton":
                triton = next((s for n, s in servers.items() if n.startswith("triton")), None)
                servers[peer.name] = triton or start_server(TRITON, args.ready_timeout)
            else:
                servers[peer.name] = start_floor(peer, args.ready_timeout)
        up = list(servers)
        for repeat in range(args.repeats):
            for conc in CONCURRENCY:
                shift = (repeat + conc) % len(up)
                for name in up[shift:] + up[:shift]:
                    step = drive(servers[name], runs[name].peer, conc, args)
                    runs[name].steps.setdefault(conc, []).append(step)
    finally:
        for server in {id(s): s for s in servers.values()}.values():
            server.stop()


# -------------------------------------------------------------------------------- report


def arithmetic(runs: dict[str, Runs]) -> tuple[list[list[object]], dict[int, bool]]:
    """Per stream count, the rows of the CPU arithmetic (see the report's text) and whether the
    fastest floor reached Triton's faster client layout."""
    triton = [r for r in runs.values() if r.peer.kind == "triton" and r.steps]
    floors = [r for r in runs.values() if r.peer.kind != "triton" and r.steps]
    rows, reached = [], {}
    for conc in CONCURRENCY:
        best = max(triton, key=lambda r: r.med(conc, "rps"))
        target = best.med(conc, "rps")
        triton_cost = best.med(conc, "server_us") + best.med(conc, "client_us")
        budget = CORES * 1e6 / target
        # The least client CPU measured against any server: the most generous to the floors.
        client = min(r.med(conc, "client_us") for r in runs.values() if r.steps)
        cheapest = min(floors, key=lambda f: f.med(conc, "server_us"))
        fastest = max(floors, key=lambda f: f.med(conc, "rps"))
        floor_cost = cheapest.med(conc, "server_us") + client  # the best case for Python
        reached[conc] = fastest.med(conc, "rps") >= target
        rows.append(
            [
                conc,
                f"{_fmt(target)} ({_fmt(triton_cost)})",
                _fmt(budget),
                _fmt(client),
                _fmt(budget - client),
                f"{_fmt(cheapest.med(conc, 'server_us'))} ({cheapest.peer.label})",
                f"{_fmt(CORES * 1e6 / floor_cost)} / {_fmt(CORES * 1e6 / triton_cost)}",
                f"{_fmt(fastest.med(conc, 'rps'))} ({fastest.peer.label})",
                _report.ratio(fastest.med(conc, "rps"), target),
            ]
        )
    return rows, reached


def report(runs: dict[str, Runs], args: argparse.Namespace) -> None:
    header = ["server", "conc", "req/s", "p50 ms", "p99 ms", "failed", "server CPU us/req"]
    header += ["busiest process, % of server CPU", "client CPU us/req", "req/s vs Triton 1 conn"]
    header += [f"vs Triton {CONNECTIONS} conn", "vs same floor x1"]
    rows, csv_rows = [], []
    for r in runs.values():
        one = runs.get(f"{r.peer.kind}-1")
        for conc in CONCURRENCY:
            rps = r.med(conc, "rps")
            rows.append(
                [
                    r.peer.label,
                    conc,
                    _fmt(rps),
                    _fmt(r.med(conc, "p50"), 2),
                    _fmt(r.med(conc, "p99"), 2),
                    r.failed(conc),
                    _fmt(r.med(conc, "server_us")),
                    "" if r.peer.kind == "triton" else _fmt(100 * r.med(conc, "busiest")),
                    _fmt(r.med(conc, "client_us")),
                    _report.ratio(rps, runs["triton-1"].med(conc, "rps")),
                    _report.ratio(rps, runs["triton-n"].med(conc, "rps")),
                    _report.ratio(rps, one.med(conc, "rps"))
                    if one and r.peer.kind != "triton"
                    else "",
                ]
            )
            csv_rows.append(_csv_row(r, conc))
    _report.append_csv(_report.result_path("bench_grpc_floor.csv"), csv_rows)
    arith_rows, reached = arithmetic(runs)
    arith_header = ["conc", "Triton req/s (its server + client CPU us/req)", "CPU us/req at it"]
    arith_header += ["client's share (least measured)", "left for the server"]
    arith_header += ["cheapest floor's server CPU us/req", "req/s CPU-bound: floor / Triton"]
    arith_header += ["fastest floor req/s", "vs Triton"]
    verdict = "**A" if reached[16] and reached[64] else "**No"
    verdict += " Python gRPC floor reaches Triton's req/s at both 16 and 64 streams**, one or more processes."
    (before, after) = args.load
    markdown = f"""#### gRPC floors on several processes, one port (issue 16)

`{_report.command_line()}` on {_report.machine()}; commit {_report.commit()}, {_report.today()}.
Medians of {args.repeats} rounds, {args.duration:g} s per step after {args.warmup:g} s warm-up, all
servers up together and driven one at a time step by step in an order rotated each round; load
average (1-minute) {before:.2f} at the start, {after:.2f} at the end. Floors: a canned reply
(`bench_grpc.floor_server`, no model) on N processes sharing one port through SO_REUSEPORT; the
kernel deals connections, not streams, to the processes, so floors are driven over
{CONNECTIONS} connections (streams dealt round-robin), Triton (the real `simple`, Python backend)
over one, as bench_grpc drives it, and over {CONNECTIONS}. Server CPU: all its processes (Triton's
Python stub too); client CPU: the load generator's (this process, all threads).

{_report.markdown_table(header, rows)}

CPU arithmetic (the server and the client share {CORES} cores): at Triton's req/s each request
can cost at most {CORES} x 1e6 / (req/s) us of CPU in all; the client takes its share (the least
measured against any server, the most generous case); the server gets the rest. CPU-bound req/s:
{CORES} x 1e6 / (server + client us/req), cheapest floor + least client / Triton. Other jobs on the machine take cycles too, and more so from one process than from three
(the scheduler shares the cores among tasks): a loaded machine flatters the multi-process floors.

{_report.markdown_table(arith_header, arith_rows)}

{verdict}
"""
    _report.write_section("server-grpc-floor", markdown)
    print(markdown)


def _csv_row(r: Runs, conc: int) -> dict[str, object]:
    return {
        "scenario": "simple-grpc-floor",
        "server": r.peer.name,
        "processes": r.peer.procs,
        "connections": r.peer.connections,
        "concurrency": conc,
        "repeats": len(r.steps.get(conc, [])),
        "rps_p50": round(r.med(conc, "rps"), 1),
        "lat_p99_ms": round(r.med(conc, "p99"), 3),
        "server_cpu_us": round(r.med(conc, "server_us"), 1),
        "busiest_share": round(r.med(conc, "busiest"), 3),
        "client_cpu_us": round(r.med(conc, "client_us"), 1),
        "failed": r.failed(conc),
        "machine": _report.machine(),
        "commit": _report.commit(),
        "date": _report.today(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--procs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.procs, args.sync)
        return 0
    _report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    runs = {peer.name: Runs(peer) for peer in PEERS}
    load_before = os.getloadavg()[0]
    run(runs, args)
    args.load = (load_before, os.getloadavg()[0])
    report(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
