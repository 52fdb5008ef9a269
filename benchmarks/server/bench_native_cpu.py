"""The native backend's CPU paths on the benchmark MLP, each against its baseline in one process.

    .venv/bin/python -m benchmarks.server.bench_native_cpu [--rounds 15]

The MLP of mlp_models.py (256 -> 512 -> 512 -> 256, exact GELU, fixed-seed weights, weights in
Fortran order as the native backend keeps them), timed as ``LinearChain`` calls, the way a
native CPU instance runs its linear layers:

- FP32, one row: the one-row kernel (row-major weight copy, ``y += x[p] * W[p]``) against the
  same chain with ``one_row_kernel=False`` (the batch kernel's dot products).
- FP16, 1 and 16 rows: the chain over float32 weights converted once, at construction, against
  the per-layer path the backend used before (``kernels.cpu.linear.linear`` per layer, which
  converts the FP16 weights to float32 on every call).

Cases run in turn within every round (so machine load hits them alike); medians over rounds.
Writes benchmarks/results/bench_native_cpu.csv and docs/PERFORMANCE.md's ``native-cpu`` block.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accelserve.kernels.cpu.linear import LinearChain, linear  # noqa: E402
from benchmarks import _report  # noqa: E402
from benchmarks.server import mlp_models as mlp  # noqa: E402

CSV = _report.result_path("bench_native_cpu.csv")
Layers = list[tuple[np.ndarray, np.ndarray, str | None]]


def layers(dtype: type) -> Layers:
    return [
        (np.asfortranarray(w.astype(dtype)), b.astype(dtype), activation)
        for (w, b), activation in zip(mlp.make_params(), mlp.MLP.activations, strict=True)
    ]


def per_layer(model: Layers) -> Callable[[np.ndarray], np.ndarray]:
    steps = [functools.partial(linear, w=w, b=b, activation=a) for w, b, a in model]

    def run(x: np.ndarray) -> np.ndarray:
        for step in steps:
            x = step(x)
        return x

    return run


def time_cases(cases: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    """Median microseconds per call of each case, the cases taking turns in every round."""
    for fn in cases.values():
        fn()  # compile, warm the caches
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter_ns()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter_ns() - start) / calls / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300, help="calls per case and round")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()

    fp32, fp16 = layers(np.float32), layers(np.float16)
    rng = np.random.default_rng(0)
    groups = []  # (what, rows, ours label, baseline label, fns)
    x = rng.standard_normal((1, mlp.MLP.inputs)).astype(np.float32)
    row, batch = LinearChain(fp32), LinearChain(fp32, one_row_kernel=False)
    np.testing.assert_allclose(row(x), batch(x), rtol=1e-4, atol=1e-5)
    groups.append(("FP32", 1, "one-row kernel", "batch kernel", (lambda: row(x), lambda: batch(x))))
    chain16, old16 = LinearChain(fp16), per_layer(fp16)
    for rows in (1, 16):
        x16 = rng.standard_normal((rows, mlp.MLP.inputs)).astype(np.float16)
        np.testing.assert_allclose(
            chain16(x16).astype(np.float16).astype(np.float32),
            old16(x16).astype(np.float32),
            rtol=2e-2,
            atol=2e-2,
        )
        groups.append(
            (
                "FP16",
                rows,
                "chain, weights converted at load",
                "per layer, weights converted per call",
                (lambda x16=x16: chain16(x16).astype(np.float16), lambda x16=x16: old16(x16)),
            )
        )

    table, csv_rows = [], []
    for what, rows, ours, base, (fn, base_fn) in groups:
        times = time_cases({ours: fn, base: base_fn}, args.rounds, args.calls)
        speedup = times[base] / times[ours]
        table.append([what, rows, ours, f"{times[ours]:.1f}", base, f"{times[base]:.1f}",
                      f"{speedup:.2f}x"])  # fmt: skip
        csv_rows.append({"date": _report.today(), "commit": _report.commit(), "dtype": what,
                         "rows": rows, "ours": ours, "ours_us": round(times[ours], 2),
                         "baseline": base, "baseline_us": round(times[base], 2)})  # fmt: skip
    header = ["dtype", "rows", "ours", "us/call", "baseline", "us/call", "speed-up"]
    markdown = _report.markdown_table(header, table)
    print(markdown)
    if args.no_write:
        return 0
    _report.append_csv(CSV, csv_rows)
    _report.write_section(
        "native-cpu",
        f"""## Native backend on CPU: one-row kernel and FP16 weights (in process)

Machine: {_report.machine()}. Date {_report.today()}, commit {_report.commit()}.
The benchmark MLP (`benchmarks/server/mlp_models.py`, 2.1 MB of FP32 weights) as
`LinearChain` calls, each case against its baseline in the same process, taking turns in every
round; medians over {args.rounds} rounds of {args.calls} calls. One thread (this host's policy).

{markdown}

Command: `{_report.command_line()}`
""",
    )
    print(f"[bench] wrote {CSV} and docs/PERFORMANCE.md block 'native-cpu'")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
