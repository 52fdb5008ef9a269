"""Run the kernel benchmarks on one device and record them.

    python -m benchmarks.kernels.run                  # CPU (or --device cuda / tpu / auto)
    python -m benchmarks.kernels.run --ops l2_normalize,reduce --quick

Appends every measurement to benchmarks/results/bench_kernels.csv, draws
benchmarks/results/bench_kernels_<device>.png, and rewrites the ``kernels`` block of
docs/PERFORMANCE.md from the latest run of each device in the CSV (so a GPU run keeps the
CPU table and vice versa).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib
import os
import sys
from pathlib import Path

from benchmarks import _report
from benchmarks.kernels._common import Context, Measurement
from benchmarks.kernels.summary import CSV_PATH, chart_path, render

OPS = ("matmul", "linear", "add", "reduce", "l2_normalize", "masked_mean_pool_l2")
FIELDS = [
    "run_id", "date", "commit", "device", "device_name", "machine", "command", "load", "cpu_threads",
    "op", "case", "provider", "shape", "dtype", "p20_ms", "p50_ms", "p80_ms",
    "metric", "value", "ceiling", "ceiling_name", "fraction_of_ceiling",
    "baseline", "baseline_p50_ms", "speedup_vs_baseline", "note",
]  # fmt: skip


def _device(requested: str) -> str:
    if requested != "auto":
        return requested
    from accelserve.devices import parse_device

    return parse_device("auto").kind


def _device_name(device: str) -> str:
    from accelserve.devices import discover

    return next((i.name for i in discover() if i.device.kind == device), device)


def _peak_flops(device: str) -> float | None:
    """The nominal peak from accelserve.devices; on CPU, raised to what BLAS actually reaches
    (the nominal CPU figure assumes 32 FLOP/cycle, and AVX-512 cores do more)."""
    from accelserve.devices import discover

    nominal = next((i.peak_flops for i in discover() if i.device.kind == device), None)
    if device != "cpu":
        return nominal
    import time

    import numpy as np

    a = np.ones((2048, 2048), dtype=np.float32)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return max(nominal or 0.0, 2 * 2048**3 / best)


def _row(m: Measurement, meta: dict[str, str]) -> dict[str, object]:
    def r(v: float | None, digits: int = 4) -> object:
        return "" if v is None else round(v, digits)

    return {
        **meta,
        "op": m.op, "case": m.case, "provider": m.provider, "shape": m.shape, "dtype": m.dtype,
        "p20_ms": r(m.p20_ms), "p50_ms": r(m.p50_ms), "p80_ms": r(m.p80_ms),
        "metric": m.metric, "value": r(m.value, 2), "ceiling": r(m.peak, 2),
        "ceiling_name": m.peak_name, "fraction_of_ceiling": r(m.fraction, 3),
        "baseline": m.baseline, "baseline_p50_ms": r(m.baseline_p50_ms),
        "speedup_vs_baseline": r(m.speedup, 3), "note": m.note,
    }  # fmt: skip


def _raise_flops_ceiling(measured: list[Measurement], device: str) -> None:
    """On CPU no published peak is trustworthy: the FLOP/s ceiling is the best of the nominal
    estimate, the sgemm measured at start, and every vendor GEMM measured in this run."""
    if device != "cpu":
        return
    flops = [m for m in measured if m.metric == "GFLOP/s"]
    if not flops:
        return
    best = max([m.value for m in flops if "vendor" in m.case] + [m.peak or 0.0 for m in flops])
    for m in flops:
        m.peak, m.peak_name = best, "best measured GEMM FLOP/s"


def draw(rows: list[dict[str, object]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    most = max(sum(r["metric"] == m for r in rows) for m in ("GFLOP/s", "GB/s"))
    height = max(5.0, 0.32 * most + 1.5)
    fig, axes = plt.subplots(1, 2, figsize=(15, height), gridspec_kw={"width_ratios": [1, 1.3]})
    for ax, metric in zip(axes, ("GFLOP/s", "GB/s"), strict=True):
        chosen = [r for r in rows if r["metric"] == metric]
        if not chosen:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {metric} ops in this run", ha="center", transform=ax.transAxes)
            continue
        labels = [
            f"{r['op']} {r['case']}\n{r['shape']} {r['dtype']} [{r['provider']}]" for r in chosen
        ]
        values = [float(str(r["value"])) for r in chosen]
        colors = ["#999999" if "vendor" in str(r["case"]) else "#1f77b4" for r in chosen]
        ax.barh(range(len(values)), values, color=colors)
        ax.set_yticks(range(len(values)), labels, fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric} (p50; blue: accelserve, grey: vendor in the same run)")
        for i, r in enumerate(chosen):
            fraction = str(r["fraction_of_ceiling"])
            if fraction:
                ax.text(values[i], i, f" {float(fraction):.0%}", va="center", fontsize=6)
    fig.suptitle(title + "  (percent: fraction of the roofline ceiling)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _render(redraw: bool = False) -> None:
    with CSV_PATH.open() as f:
        history = list(csv.DictReader(f))
    _report.write_section("kernels", render(history))
    if not redraw:
        return
    for key in {(r["device"], r["cpu_threads"]) for r in history}:
        latest = max(r["run_id"] for r in history if (r["device"], r["cpu_threads"]) == key)
        rows: list[dict[str, object]] = [dict(r) for r in history if r["run_id"] == latest]
        first = rows[0]
        title = f"accelserve kernels on {first['device_name']} ({first['date']})"
        draw(rows, chart_path(*key), title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "tpu", "auto"])
    parser.add_argument(
        "--ops", default=",".join(OPS), help=f"comma-separated subset of {','.join(OPS)}"
    )
    parser.add_argument("--quick", action="store_true", help="fewer shapes and runs")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny shapes: the dry run of scripts/device_check.py"
    )
    parser.add_argument(
        "--emulate",
        action="store_true",
        help="--device cuda on the CPU under Triton's interpreter (the dry run of the CUDA path)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only: no CSV, PNG or docs")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=0,
        help="ACCELSERVE_CPU_THREADS for the whole run (default: the provider's own policy)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only rewrite the kernels block of docs/PERFORMANCE.md from bench_kernels.csv",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        _render(redraw=True)
        return 0
    if args.cpu_threads:
        os.environ["ACCELSERVE_CPU_THREADS"] = str(args.cpu_threads)
    device = _device(args.device)
    if args.emulate:
        if device != "cuda" or os.environ.get("TRITON_INTERPRET") != "1":
            parser.error("--emulate: needs --device cuda and TRITON_INTERPRET=1 in the environment")
        peak = None
    else:
        peak = _peak_flops(device)
    ctx = Context(device, args.quick, peak, tiny=args.tiny, emulated=args.emulate)
    meta = {
        "run_id": dt.datetime.now().strftime("%Y%m%dT%H%M%S"),
        "date": _report.today(),
        "commit": _report.commit(),
        "device": device,
        "device_name": "Triton interpreter on the CPU" if args.emulate else _device_name(device),
        "machine": _report.machine(),
        "command": " ".join(
            ["python -m benchmarks.kernels.run", *(sys.argv[1:] if argv is None else argv)]
        ),
        "cpu_threads": str(args.cpu_threads) if args.cpu_threads else "policy",
    }
    load_before = os.getloadavg()[0]
    measured: list[Measurement] = []
    for op in args.ops.split(","):
        if op not in OPS:
            parser.error(f"--ops: unknown op {op!r}; choose from {', '.join(OPS)}")
        module = importlib.import_module(f"benchmarks.kernels.bench_{op}")
        for m in module.run(ctx):
            measured.append(m)
            print(f"{m.op:20s} {m.case:22s} {m.provider:12s} {m.shape:16s} {m.dtype:9s} "
                  f"p50 {m.p50_ms:9.4f} ms  {m.value:9.1f} {m.metric}", flush=True)  # fmt: skip
    _raise_flops_ceiling(measured, device)
    rows = [_row(m, meta) for m in measured]
    # Other processes share this machine: record how busy it was (1-min load, start -> end).
    meta["load"] = f"{load_before:.2f} -> {os.getloadavg()[0]:.2f}"
    for row in rows:
        row["load"] = meta["load"]
    if args.no_record:
        return 0
    _report.append_csv(CSV_PATH, [{k: row.get(k, "") for k in FIELDS} for row in rows])
    png = chart_path(device, meta["cpu_threads"])
    draw(rows, png, f"accelserve kernels on {meta['device_name']} ({meta['date']})")
    _render()
    print(f"appended {len(rows)} rows to {CSV_PATH}, drew {png}, updated {_report.PERFORMANCE_MD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
