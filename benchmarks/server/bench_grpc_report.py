"""bench_grpc.py's report: the peers and metrics-pair tables, the scrape-cost table, the CSV rows,
the plot, and docs/PERFORMANCE.md's `server-grpc` block."""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from benchmarks import _report
from benchmarks.server.grpc_peers import CONCURRENCY, FLOOR, LABELS, TRITON, Runs, step_value


def fmt(x: float, nd: int = 0) -> str:
    return "-" if math.isnan(x) else f"{x:,.{nd}f}"


def report(
    peers: dict[str, Runs], on: Runs, off: Runs, cost: dict[str, float], args: argparse.Namespace
) -> None:
    triton, floor = peers.get(TRITON), peers.get(FLOOR)
    header = ["server", "conc", "req/s", "p50 ms", "p99 ms", "failed", "server CPU us/req"]
    header += ["mean batch"]
    header += ["client CPU us/req"]
    header += ["req/s vs Triton", "req/s vs floor"]
    rows: list[list[object]] = []
    csv_rows: list[dict[str, object]] = []
    for runs in peers.values():
        if not runs.steps:
            rows.append([LABELS[runs.name], "-", f"skipped: {runs.skipped}", *[""] * 8])
            continue
        for conc in CONCURRENCY:
            rps = runs.med(conc, "rps")
            t_rps = triton.med(conc, "rps") if triton else math.nan
            f_rps = floor.med(conc, "rps") if floor else math.nan
            rows.append(
                [
                    LABELS[runs.name],
                    conc,
                    fmt(rps),
                    fmt(runs.med(conc, "p50"), 2),
                    fmt(runs.med(conc, "p99"), 2),
                    runs.failed(conc),
                    fmt(runs.med(conc, "server_us")),
                    fmt(runs.med(conc, "batch"), 2),
                    fmt(runs.med(conc, "client_us")),
                    _report.ratio(rps, t_rps),
                    _report.ratio(rps, f_rps),
                ]
            )
            csv_rows.append(
                _csv_row("peers", runs, conc, vs_triton=_report.plain_ratio(rps, t_rps))
            )
    pair_rows = []
    for conc in CONCURRENCY:
        ratios = [
            a.result.throughput / b.result.throughput
            for a, b in zip(on.steps.get(conc, []), off.steps.get(conc, []), strict=False)
            if b.result.throughput
        ]
        on_vs_off = statistics.median(ratios) if ratios else math.nan
        pair_rows.append(
            [
                conc,
                fmt(on.med(conc, "rps")),
                fmt(off.med(conc, "rps")),
                "-" if math.isnan(on_vs_off) else f"{100 * (on_vs_off - 1):+.1f}%",
                ", ".join(f"{100 * (r - 1):+.1f}" for r in ratios),
                f"{fmt(on.med(conc, 'p99'), 2)} / {fmt(off.med(conc, 'p99'), 2)}",
                f"{fmt(on.med(conc, 'server_us'))} / {fmt(off.med(conc, 'server_us'))}",
                on.failed(conc) + off.failed(conc),
            ]
        )
        for runs in (on, off):
            if runs.steps.get(conc):
                csv_rows.append(
                    _csv_row(
                        "metrics-pair", runs, conc, on_vs_off=_report.plain_ratio(on_vs_off, 1.0)
                    )
                )
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
rounds (on: `/metrics` scraped once a second, median scrape {fmt(scrape_ms, 1)} ms; off:
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
    values = sorted(step_value(s, "rps") for s in runs.steps[conc])
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
        fmt(cost["bytes"] / 1024, 1),
        fmt(cost["render_ms"], 2),
        fmt(cost["scrape_ms"], 2),
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
