"""Step results as rows: a text table (stdout), CSV, and a PNG chart (matplotlib, lazily)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelserve.tools.bench.runner import StepResult

COLUMNS = (
    "mode",
    "level",
    "batch_size",
    "requests",
    "failed",
    "duration_s",
    "throughput_rps",
    "infer_per_s",
    "lat_avg_ms",
    "lat_p50_ms",
    "lat_p90_ms",
    "lat_p95_ms",
    "lat_p99_ms",
    "lat_max_ms",
    "late",
    "client_cpu_us",
    "server_requests",
    "server_failed",
    "counts_match",
    "server_inferences",
    "server_executions",
    "avg_batch",
    "server_request_us",
    "queue_us",
    "compute_input_us",
    "compute_infer_us",
    "compute_output_us",
    "overhead_us",
    "errors",
)


def _r(x: float, nd: int = 3) -> float | str:
    return "" if math.isnan(x) else round(x, nd)


def as_row(r: StepResult) -> dict[str, Any]:
    lat, s = r.latency, r.server
    row: dict[str, Any] = {
        "mode": r.mode,
        "level": f"{r.level:g}",
        "batch_size": r.batch_size,
        "requests": r.ok,
        "failed": r.failed,
        "duration_s": round(r.duration_s, 3),
        "throughput_rps": round(r.throughput, 1),
        "infer_per_s": round(r.throughput * r.batch_size, 1),
        "lat_avg_ms": _r(lat.avg * 1e3),
        "lat_p50_ms": _r(lat.p50 * 1e3),
        "lat_p90_ms": _r(lat.p90 * 1e3),
        "lat_p95_ms": _r(lat.p95 * 1e3),
        "lat_p99_ms": _r(lat.p99 * 1e3),
        "lat_max_ms": _r(lat.max * 1e3),
        "late": r.late,
        "client_cpu_us": _r(r.client_cpu_us, 1),
        "errors": "; ".join(f"{n}x {text}" for text, n in r.errors.items()),
    }
    if s is not None:
        row |= {
            "server_requests": s.requests,
            "server_failed": s.failed,
            "counts_match": r.counts_match,
            "server_inferences": s.inferences,
            "server_executions": s.executions,
            "avg_batch": _r(s.avg_batch, 2),
            "server_request_us": _r(s.request_us, 1),
            "queue_us": _r(s.queue_us, 1),
            "compute_input_us": _r(s.compute_input_us, 1),
            "compute_infer_us": _r(s.compute_infer_us, 1),
            "compute_output_us": _r(s.compute_output_us, 1),
            "overhead_us": _r(s.overhead_us, 1),
        }
    return {c: row.get(c, "") for c in COLUMNS}


def write_csv(path: str | Path, results: Sequence[StepResult]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(as_row(r) for r in results)


def _fmt(x: float, nd: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{nd}f}"


def table(results: Sequence[StepResult]) -> str:
    """Client columns, then the server's own account of the same window."""
    if not results:
        return "(no steps)"
    level_name = "conc" if results[0].mode == "concurrency" else "req/s sent"
    head = [level_name, "req/s", "ok", "failed", "avg ms", "p50 ms", "p90 ms", "p99 ms"]
    server = any(r.server is not None for r in results)
    if server:
        head += ["srv reqs", "batch", "queue us", "input us", "infer us", "output us", "ovh us"]
    rows = []
    for r in results:
        lat = r.latency
        row = [f"{r.level:g}", f"{r.throughput:,.1f}", str(r.ok), str(r.failed)]
        row += [_fmt(lat.avg * 1e3), _fmt(lat.p50 * 1e3), _fmt(lat.p90 * 1e3), _fmt(lat.p99 * 1e3)]
        if server:
            s = r.server
            if s is None:
                row += ["-"] * 7
            else:
                mark = "" if r.counts_match else "!"
                row += [f"{s.total}{mark}", _fmt(s.avg_batch), _fmt(s.queue_us, 1)]
                row += [_fmt(s.compute_input_us, 1), _fmt(s.compute_infer_us, 1)]
                row += [_fmt(s.compute_output_us, 1), _fmt(s.overhead_us, 1)]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def write_png(path: str | Path, results: Sequence[StepResult], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("no steps to plot")
    xs = [r.level for r in results]
    server = [r.server for r in results]
    panels = 3 if any(s is not None for s in server) else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), constrained_layout=True)
    xlabel = "concurrency" if results[0].mode == "concurrency" else "request rate sent (req/s)"
    ax = axes[0]
    ax.plot(xs, [r.throughput for r in results], "o-")
    ax.set(xlabel=xlabel, ylabel="requests/s", title="throughput")
    ax = axes[1]
    for name in ("p50", "p90", "p99"):
        ax.plot(xs, [getattr(r.latency, name) * 1e3 for r in results], "o-", label=name)
    ax.set(xlabel=xlabel, ylabel="ms", title="client latency")
    ax.legend()
    for a in axes[:2]:
        if len(xs) > 1 and max(xs) / min(xs) >= 8:
            a.set_xscale("log", base=2)
        a.grid(alpha=0.3)
    if panels == 3:
        ax = axes[2]
        labels = [f"{x:g}" for x in xs]
        bottom = [0.0] * len(xs)
        for name in ("queue_us", "compute_input_us", "compute_infer_us", "compute_output_us"):
            vals = [
                0.0 if s is None or math.isnan(getattr(s, name)) else getattr(s, name)
                for s in server
            ]
            ax.bar(labels, vals, bottom=bottom, label=name.removesuffix("_us"))
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set(xlabel=xlabel, ylabel="us per request", title="server-side breakdown")
        ax.legend(fontsize="small")
    fig.suptitle(title)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
