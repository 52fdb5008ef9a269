"""What ``accelserve advise`` prints and writes: the table, the verdict, CSV, a PNG chart and
the recommended config fields."""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelserve.tools.advisor.candidates import Candidate, Measurement, Target, apply_candidate

if TYPE_CHECKING:
    from accelserve.protocol.model_config_pb2 import ModelConfig

CSV_COLUMNS = (
    "device",
    "batch_size",
    "instances",
    "request_rows",
    "concurrency",
    "requests",
    "failed",
    "duration_s",
    "throughput_rps",
    "rows_per_s",
    "lat_p50_ms",
    "lat_p99_ms",
    "avg_batch",
    "meets_objective",
    "recommended",
    "error",
)


def header(model: str, args: argparse.Namespace) -> str:
    objective = f"p99 <= {args.p99_ms:g} ms" if args.p99_ms is not None else "no p99 objective"
    return (
        f"model {model!r}, {objective}; each candidate {args.duration:g} s after "
        f"{args.warmup:g} s warm-up, closed loop, in process (no network)"
    )


def _num(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:,.{digits}f}"


def row(m: Measurement, choice: Measurement | None, p99_ms: float | None) -> dict[str, Any]:
    c, r = m.candidate, m.result
    return {
        "device": str(c.device),
        "batch_size": c.batch_size,
        "instances": c.instances,
        "request_rows": c.request_rows,
        "concurrency": c.concurrency,
        "requests": r.ok if r is not None else 0,
        "failed": r.failed if r is not None else 0,
        "duration_s": round(r.duration_s, 3) if r is not None else "",
        "throughput_rps": round(m.throughput, 1),
        "rows_per_s": round(m.rows_per_s, 1),
        "lat_p50_ms": "" if math.isnan(m.p50_ms) else round(m.p50_ms, 3),
        "lat_p99_ms": "" if math.isnan(m.p99_ms) else round(m.p99_ms, 3),
        "avg_batch": "" if math.isnan(m.avg_batch) else round(m.avg_batch, 2),
        "meets_objective": m.meets(p99_ms),
        "recommended": m is choice,
        "error": m.error,
    }


def table(
    measurements: Sequence[Measurement], choice: Measurement | None, p99_ms: float | None
) -> str:
    """A plain aligned table; ``*`` marks the recommendation."""
    meets = f"p99<={p99_ms:g}ms" if p99_ms is not None else "ok"
    head = ["", "device", "batch", "inst", "conc", "req/s", "rows/s", "p50 ms", "p99 ms"]
    head += ["avg batch", "failed", meets]
    lines = [head]
    for m in measurements:
        c = m.candidate
        failed = str(m.result.failed) if m.result is not None else "-"
        verdict = "yes" if m.meets(p99_ms) else ("error" if m.error else "no")
        lines.append(
            [
                "*" if m is choice else "",
                str(c.device),
                str(c.batch_size),
                str(c.instances),
                str(c.concurrency),
                _num(m.throughput, 0),
                _num(m.rows_per_s, 0),
                _num(m.p50_ms, 3),
                _num(m.p99_ms, 3),
                _num(m.avg_batch, 1),
                failed,
                verdict,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = []
    for line in lines:
        cells = [
            cell.ljust(w) if i in (0, 1) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
    for m in measurements:
        if m.error:
            text.append(f"error: {m.candidate.label}: {m.error}")
    return "\n".join(text)


def verdict(choice: Measurement, met: bool, p99_ms: float | None) -> str:
    c = choice.candidate
    what = (
        f"{c.device}, preferred batch {c.batch_size}, {c.instances} instance(s): "
        f"{choice.throughput:,.0f} req/s, p99 {choice.p99_ms:.3f} ms"
    )
    if met:
        within = f" within p99 {p99_ms:g} ms" if p99_ms is not None else ""
        return f"recommended (*): {what} (highest throughput{within})"
    return (
        f"no candidate meets p99 <= {p99_ms:g} ms; lowest p99 (*, NOT meeting the objective): "
        f"{what}"
    )


def recommended_fields(config: ModelConfig, candidate: Candidate) -> ModelConfig:
    """Only the fields ``--write-config`` sets (for printing)."""
    from accelserve.protocol.model_config_pb2 import ModelConfig

    full = apply_candidate(config, candidate)
    fields = ModelConfig(max_batch_size=full.max_batch_size)
    if full.max_batch_size > 0:
        fields.dynamic_batching.preferred_batch_size[:] = [candidate.batch_size]
    fields.instance_group.extend(full.instance_group)
    return fields


def write_config(target: Target, candidate: Candidate) -> Path:
    """Write the candidate's fields into the model's config.pbtxt (the previous file, if any,
    is kept as config.pbtxt.bak). The other fields stay as they were; comments are not kept."""
    from google.protobuf import text_format

    path = target.model_dir / "config.pbtxt"
    base = target.original if target.original is not None else target.config

    text = text_format.MessageToString(apply_candidate(base, candidate))
    if path.is_file():
        path.with_name("config.pbtxt.bak").write_text(path.read_text())
    path.write_text(text)
    return path


def config_text(fields: ModelConfig) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(fields)


def write_csv(
    path: str | Path,
    measurements: Sequence[Measurement],
    choice: Measurement | None,
    p99_ms: float | None,
) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for m in measurements:
            writer.writerow(row(m, choice, p99_ms))


def write_png(
    path: str | Path,
    measurements: Sequence[Measurement],
    choice: Measurement | None,
    p99_ms: float | None,
    title: str,
) -> str:
    """Throughput against p99, one point per candidate; returns a note when it cannot draw."""
    try:
        import matplotlib
    except ImportError:
        return f"--png {path}: matplotlib is not installed (pip install accelserve[charts])"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [m for m in measurements if m.result is not None and m.result.ok > 0]
    if not ran:
        return f"--png {path}: no candidate produced a measurement to plot"
    fig, ax = plt.subplots(figsize=(7, 5), constrained_layout=True)
    for device in sorted({str(m.candidate.device) for m in ran}):
        points = [m for m in ran if str(m.candidate.device) == device]
        ax.plot([m.p99_ms for m in points], [m.throughput for m in points], "o", label=device)
        for m in points:
            c = m.candidate
            ax.annotate(
                f"b{c.batch_size}x{c.instances}",
                (m.p99_ms, m.throughput),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="small",
            )
    if choice is not None and choice in ran:
        x, y = [choice.p99_ms], [choice.throughput]
        ax.plot(x, y, "*", markersize=18, color="gold", zorder=0, label="recommended")
    if p99_ms is not None:
        ax.axvline(p99_ms, linestyle="--", color="gray", label=f"objective p99 {p99_ms:g} ms")
    ax.set(xlabel="p99 latency (ms)", ylabel="requests/s", title=f"{title}: advise")
    ax.grid(alpha=0.3)
    ax.legend()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""
