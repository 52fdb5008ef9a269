"""Triton's `simple` model served by accelserve and its peers, driven by accelserve's load generator.

    bash benchmarks/server/peers/setup.sh            # once: peers' venvs in benchmarks/.peers/
    .venv/bin/python benchmarks/server/bench_simple.py [--repeats 3] [--duration 5]
    .venv/bin/python benchmarks/server/bench_simple.py --peers accelserve --baseline REV

``--baseline REV`` adds the peer *accelserve, baseline REV*: the same server run from REV's
``src/`` (exported with ``git archive``) by this venv's Python, measured in the same run, with a
``req/s vs baseline`` column.

Each repeat starts every server in turn (order rotated between repeats), times its start-to-ready
(process spawn to the first correct answer from `simple`), drives it at each concurrency with
`accelserve.tools.bench` in this process (the load generator shares the 2 cores, as in issue 2's
target), reads its resident memory (process tree) and stops it: only one server runs at a time.
Reports medians over repeats, ratios against Triton and Ray Serve measured in the same run;
writes benchmarks/results/bench_simple.csv, bench_simple_<protocol>.png, and docs/PERFORMANCE.md's
`server-simple` block.

accelserve and Triton get V2 binary tensors (tritonclient's default); Ray Serve, LitServe and the
Starlette floor get V2 JSON, the only form they implement. accelserve is one more peer: if it
fails to start, it is skipped with the reason and the others are still measured.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accelserve.tools.bench import BenchSettings, StepResult, run_bench  # noqa: E402
from accelserve.tools.bench.runner import Progress  # noqa: E402
from accelserve.tools.bench.sweep import percentile  # noqa: E402
from benchmarks import _report  # noqa: E402
from benchmarks.server.peers import launch  # noqa: E402
from benchmarks.server.peers.launch import PEERS, PeerError, start  # noqa: E402

GRPC_PEERS = (
    "accelserve",
    "accelserve-nopoll",
    "accelserve-baseline",
    "triton",
)  # the others speak HTTP only


@dataclass
class PeerRuns:
    name: str
    label: str
    wire: str
    steps: dict[int, list[StepResult]] = field(default_factory=dict)
    ready_s: list[float] = field(default_factory=list)
    rss_ready: list[int] = field(default_factory=list)
    rss_loaded: list[int] = field(default_factory=list)
    skipped: str = ""

    def med(self, conc: int, attr: str) -> float:
        values = [_metric(r, attr) for r in self.steps.get(conc, [])]
        return statistics.median(values) if values else math.nan


def _metric(r: StepResult, attr: str) -> float:
    if attr == "rps":
        return r.throughput
    return float(getattr(r.latency, attr)) * 1e3  # ms


def simple_repository() -> Path:
    """A model repository holding only the example `simple`: the example repository also holds
    the MiniLM pipeline, which accelserve would load too (start-up time, memory, threads)."""
    from accelserve.tools.examples.build import BUILDERS

    repository = launch.PEERS_DIR / "accelserve_simple"
    shutil.rmtree(repository, ignore_errors=True)
    target = repository / "simple"
    target.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "model_repository" / "simple" / "config.pbtxt", target)
    BUILDERS["simple"](target)
    return repository


def run_peer(name: str, args: argparse.Namespace, runs: PeerRuns) -> None:
    print(f"[bench] starting {name}", file=sys.stderr, flush=True)
    try:
        peer = start(name, ready_timeout=args.ready_timeout)
    except PeerError as exc:
        runs.skipped = str(exc).splitlines()[0][:300]
        print(f"[bench] SKIPPING {name}: {exc}", file=sys.stderr, flush=True)
        return
    try:
        runs.ready_s.append(peer.ready_s)
        runs.rss_ready.append(peer.rss_bytes())
        port = peer.grpc_port if args.protocol == "grpc" else peer.port
        settings = BenchSettings(
            url=f"127.0.0.1:{port}",
            model="simple",
            protocol=args.protocol,
            http_format=peer.http_format,
            concurrency=args.concurrency,
            duration_s=args.duration,
            warmup_s=args.warmup,
        )
        outcome = run_bench(settings, Progress(sys.stderr))
        for step in outcome.steps:
            runs.steps.setdefault(int(step.level), []).append(step)
            if step.counts_match is False:
                print(f"[bench] {name} c={step.level:g}: server count differs", file=sys.stderr)
        runs.rss_loaded.append(peer.rss_bytes())
    except Exception as exc:  # one broken peer must not lose the others' numbers
        runs.skipped = f"failed during the run: {exc}"[:300]
        print(f"[bench] {name} failed: {exc}", file=sys.stderr, flush=True)
    finally:
        peer.stop()


def _fmt(x: float, nd: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:,.{nd}f}"


def summarize(all_runs: dict[str, PeerRuns], args: argparse.Namespace) -> tuple[str, list[dict]]:
    triton, ray = all_runs.get("triton"), all_runs.get("ray")
    baseline = all_runs.get("accelserve-baseline")
    header = ["server", "wire", "conc", "req/s", "p50 ms", "p99 ms", "req/s vs Triton"]
    header += ["p99 vs Triton", "req/s vs Ray", "req/s vs baseline", "failed"]
    rows, csv_rows = [], []
    for runs in all_runs.values():
        if runs.skipped and not runs.steps:
            rows.append([runs.label, runs.wire, "-", f"skipped: {runs.skipped}"] + [""] * 7)
            continue
        for conc in args.concurrency:
            rps, p50, p99 = (runs.med(conc, a) for a in ("rps", "p50", "p99"))
            t_rps = triton.med(conc, "rps") if triton else math.nan
            t_p99 = triton.med(conc, "p99") if triton else math.nan
            r_rps = ray.med(conc, "rps") if ray else math.nan
            b_rps = baseline.med(conc, "rps") if baseline else math.nan
            failed = sum(s.failed for s in runs.steps.get(conc, []))
            ratios = [
                _report.ratio(rps, t_rps),
                _report.ratio(p99, t_p99),
                _report.ratio(rps, r_rps),
                _report.ratio(rps, b_rps),
            ]
            rows.append(
                [runs.label, runs.wire, conc, _fmt(rps, 0), _fmt(p50), _fmt(p99), *ratios, failed]
            )
            all_rps = sorted(s.throughput for s in runs.steps.get(conc, []))
            csv_rows.append(
                {
                    "scenario": f"simple-{args.protocol}",
                    "server": runs.name,
                    "wire": runs.wire,
                    "concurrency": conc,
                    "repeats": len(all_rps),
                    "rps_p20": round(percentile(all_rps, 20), 1) if all_rps else "",
                    "rps_p50": round(rps, 1),
                    "rps_p80": round(percentile(all_rps, 80), 1) if all_rps else "",
                    "lat_p50_ms": round(p50, 3),
                    "lat_p99_ms": round(p99, 3),
                    "failed": failed,
                    "rps_vs_triton": _report.plain_ratio(rps, t_rps),
                    "rps_vs_ray": _report.plain_ratio(rps, r_rps),
                    "ready_s": round(statistics.median(runs.ready_s), 2) if runs.ready_s else "",
                    "rss_mib": round(statistics.median(runs.rss_loaded) / 2**20, 1)
                    if runs.rss_loaded
                    else "",
                    "device": "cpu",
                    "machine": _report.machine(),
                    "commit": _report.commit(),
                    "date": _report.today(),
                }
            )
    return _report.markdown_table(header, rows), csv_rows


def resources_table(all_runs: dict[str, PeerRuns]) -> str:
    rows = []
    for runs in all_runs.values():
        if not runs.ready_s:
            rows.append([runs.label, "-", "-", "-"])
            continue
        mib = lambda xs: _fmt(statistics.median(xs) / 2**20, 0) if xs else "-"  # noqa: E731
        rows.append(
            [
                runs.label,
                _fmt(statistics.median(runs.ready_s)),
                mib(runs.rss_ready),
                mib(runs.rss_loaded),
            ]
        )
    header = ["server", "start-to-ready s", "RSS at ready MiB", "RSS after load MiB"]
    return _report.markdown_table(header, rows)


def write_png(all_runs: dict[str, PeerRuns], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in all_runs.values() if r.steps]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    width = 0.8 / max(1, len(measured))
    for k, runs in enumerate(measured):
        xs = [i + k * width for i in range(len(args.concurrency))]
        axes[0].bar(xs, [runs.med(c, "rps") for c in args.concurrency], width, label=runs.label)
        axes[1].bar(xs, [runs.med(c, "p99") for c in args.concurrency], width, label=runs.label)
    for ax, title in zip(
        axes, ("throughput (req/s, median)", "p99 latency (ms, median)"), strict=True
    ):
        ax.set_xticks([i + width * (len(measured) - 1) / 2 for i in range(len(args.concurrency))])
        ax.set_xticklabels([f"{c} conn." for c in args.concurrency])
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize="small")
    fig.suptitle(f"`simple` over {args.protocol.upper()}, load generator on the same 2 cores")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated, in order")
    parser.add_argument("--protocol", choices=("http", "grpc"), default="http")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--block", default="", help="PERFORMANCE.md block (default per protocol)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--baseline", default="", help="git revision: also serve accelserve from its sources"
    )
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {list(PEERS)}")
    if args.protocol == "grpc":
        dropped = [n for n in names if n not in GRPC_PEERS]
        if dropped:
            print(f"[bench] no gRPC in {dropped}: measured over HTTP only", file=sys.stderr)
        names = [n for n in names if n in GRPC_PEERS]
    baseline_dir = tempfile.TemporaryDirectory(prefix="accelserve-baseline-")
    if args.baseline:
        short = launch.export_source(args.baseline, Path(baseline_dir.name))
        launch.BASELINE_SRC = Path(baseline_dir.name) / "src"
        PEERS["accelserve-baseline"] = (f"accelserve, baseline {short}", "binary")
        names += [] if "accelserve-baseline" in names else ["accelserve-baseline"]
    else:
        names = [n for n in names if n != "accelserve-baseline"]
    if {"accelserve", "accelserve-nopoll", "accelserve-baseline"} & set(names):
        launch.ACCELSERVE_REPOSITORY = simple_repository()
    load_before = os.getloadavg()[0]
    all_runs = {
        n: PeerRuns(n, PEERS[n][0], "gRPC" if args.protocol == "grpc" else PEERS[n][1])
        for n in names
    }
    t0 = time.perf_counter()
    for rep in range(args.repeats):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            runs = all_runs[name]
            if runs.skipped and not runs.steps:
                continue  # it failed to start once: do not pay its timeout again
            run_peer(name, args, runs)
    elapsed = time.perf_counter() - t0
    table, csv_rows = summarize(all_runs, args)
    resources = resources_table(all_runs)
    print(table)
    print()
    print(resources)
    if args.no_write:
        return 0
    csv_path = _report.result_path("bench_simple.csv")
    _report.append_csv(csv_path, csv_rows)
    # a block of its own (e.g. a baseline comparison) keeps the main block's chart as it is
    chart = (
        f"bench_{args.block.replace('-', '_')}" if args.block else f"bench_simple_{args.protocol}"
    )
    png = _report.result_path(f"{chart}.png")
    write_png(all_runs, args, png)
    command = " ".join(["python", "benchmarks/server/bench_simple.py", *sys.argv[1:]])
    if os.environ.get("ACCELSERVE_ARGS"):  # extra `accelserve serve` flags (see peers/launch.py)
        command = f'ACCELSERVE_ARGS="{os.environ["ACCELSERVE_ARGS"]}" {command}'
    block = args.block or ("server-simple" if args.protocol == "http" else "server-simple-grpc")
    wire_note = (
        "accelserve and Triton: V2 binary tensor data (tritonclient's default); Ray Serve, "
        "LitServe, Starlette: V2 JSON (they do not implement the binary extension)"
        if args.protocol == "http"
        else "gRPC ModelInfer with raw_input_contents"
    )
    servers = " vs ".join(runs.label for runs in all_runs.values())
    md = f"""## `simple` over {args.protocol.upper()}: {servers}

Machine: {_report.machine()}; load average {load_before:.2f} at start (a shared machine:
other work may run beside it). Date {_report.today()}, commit {_report.commit()}.
Load generator: `accelserve.tools.bench` in the benchmark's process on the same 2 cores; each step
{args.warmup:g} s warm-up then {args.duration:g} s measured; medians over {args.repeats} repeats
(servers started one at a time, order rotated); run time {elapsed:.0f} s.
Wire: {wire_note}.
Every server runs one model instance; accelserve, Triton, Ray Serve and LitServe batch dynamically
(max 8). accelserve serves a repository holding only the example `simple` (ONNX Runtime, 1
thread, `dynamic_batching {{ }}`: no queue delay) with its default settings, which include
busy polling (`--busy-poll-us 200`: after a response the event loop polls its sockets for the
next request instead of sleeping); *accelserve, --busy-poll-us 0* is the same server without
it. Triton serves a Python-backend `simple` with `dynamic_batching {{ }}`.

{table}

Start-to-ready is process spawn to the first correct `simple` answer; RSS is summed over the
server's process tree (Ray: driver, GCS, raylet, proxy, replica and helpers).

{resources}

![simple over {args.protocol}]({_report.link_from_docs(png)})

Commands:

```
bash benchmarks/server/peers/setup.sh
{command}
```
"""
    _report.write_section(block, md)
    print(f"[bench] wrote {csv_path}, {png} and docs/PERFORMANCE.md block {block!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
