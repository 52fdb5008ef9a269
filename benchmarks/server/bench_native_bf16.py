"""The example MLP through the native backend with BF16 weights against FP32, served side by side.

    python -m benchmarks.server.bench_native_bf16 [--repeats 3] [--duration 5] [--concurrency 1,16]

The MLP of mlp_models.py (256 -> 512 -> 512 -> 256, exact GELU, fixed-seed weights) written as
two native models in one repository: ``mlp_native`` (FP32 weights, FP32 input and output) and
``mlp_native_bf16`` (the same weights rounded to BF16; a native model's input and output share
its weights' datatype, so requests and responses carry BF16, half the bytes). One ``accelserve
serve`` process serves both; each repeat drives one then the other (order alternating between
repeats) with ``accelserve.tools.bench`` over V2 HTTP binary tensors at each concurrency;
medians over repeats, and the BF16/FP32 ratios of req/s and p99 as the median of each
repeat's ratio (the two sides of a ratio run back to back).

Accuracy: 64 fixed rows sent to both through the server (JSON: the BF16 model receives the rows
rounded to BF16), each answer compared with the float64 NumPy reference on the FP32 rows:
max absolute error, and max error relative to the reference's largest magnitude.

Writes benchmarks/results/bench_native_bf16.csv and docs/PERFORMANCE.md's ``native-bf16``
block (CPU model, load average, exact command).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import ml_dtypes
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accelserve.tools.bench import BenchSettings, run_bench  # noqa: E402
from accelserve.tools.bench.runner import Progress  # noqa: E402
from benchmarks import _report  # noqa: E402
from benchmarks.server import mlp_models as mlp  # noqa: E402
from benchmarks.server.peers import launch  # noqa: E402

CSV = _report.result_path("bench_native_bf16.csv")
MODELS = {"FP32": "mlp_native", "BF16": "mlp_native_bf16"}


def build(root: Path) -> None:
    """``root/mlp_native`` (FP32) and ``root/mlp_native_bf16`` (its weights in BF16)."""
    from accelserve.backends.native_format import write_native_model

    params = mlp.make_params()
    mlp.write_native(root / MODELS["FP32"] / "1", params, mlp.MLP)
    (root / MODELS["FP32"] / "config.pbtxt").write_text(
        mlp.config_text("native").replace(mlp.model_name("native"), MODELS["FP32"])
    )
    bf16 = np.dtype(ml_dtypes.bfloat16)
    layers, weights = [], {}
    for i, ((w, b), act) in enumerate(zip(params, mlp.MLP.activations, strict=True)):
        weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"] = w.astype(bf16), b.astype(bf16)
        layers.append(
            {"type": "linear", "weight": f"layers.{i}.weight", "bias": f"layers.{i}.bias"}
            | {"activation": act}
        )
    spec = {"name": mlp.INPUT, "datatype": "BF16", "dims": [mlp.MLP.inputs]}
    write_native_model(root / MODELS["BF16"] / "1", layers, weights, spec, mlp.OUTPUT)
    config = mlp.config_text("native").replace(mlp.model_name("native"), MODELS["BF16"])
    (root / MODELS["BF16"] / "config.pbtxt").write_text(config.replace("TYPE_FP32", "TYPE_BF16"))


def infer(port: int, model: str, datatype: str, x: np.ndarray) -> np.ndarray:
    tensor = {"name": mlp.INPUT, "datatype": datatype, "shape": list(x.shape)}
    body = json.dumps({"inputs": [tensor | {"data": x.astype(np.float32).ravel().tolist()}]})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        output = json.loads(response.read())["outputs"][0]
    return np.asarray(output["data"], np.float64).reshape(output["shape"])


def errors(port: int) -> dict[str, tuple[float, float]]:
    """(max abs, max rel) of each model's served answer against the float64 reference."""
    x = np.random.default_rng(11).standard_normal((64, mlp.MLP.inputs)).astype(np.float32)
    want = mlp.reference(x, mlp.make_params())
    scale = float(np.max(np.abs(want)))
    found = {}
    for datatype, model in MODELS.items():
        sent = x.astype(ml_dtypes.bfloat16) if datatype == "BF16" else x
        err = float(np.max(np.abs(infer(port, model, datatype, sent) - want)))
        found[datatype] = (err, err / scale)
    return found


def start(root: Path, timeout_s: float = 120.0) -> tuple[subprocess.Popen[bytes], int]:
    port = launch.free_port()
    cmd = [sys.executable, "-m", "accelserve.cli", "serve", "--model-repository", str(root)]
    cmd += ["--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0"]
    launch.LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = (launch.LOG_DIR / "native-bf16.log").open("wb")
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, env=os.environ
    )
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log.name}")
        try:
            if all(
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{m}/ready").status == 200
                for m in MODELS.values()
            ):
                return proc, port
        except OSError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s")


def _paired(
    results: dict[tuple[str, int], list[tuple[float, float]]], dt: str, level: int, column: int
) -> float:
    """The median over repeats of ``dt``'s value over FP32's in the same repeat (the two run
    back to back, so a busy spell on the shared machine hits both sides of a ratio alike)."""
    pairs = zip(results[(dt, level)], results[("FP32", level)], strict=True)
    return statistics.median(mine[column] / fp32[column] for mine, fp32 in pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per level")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,16", help="closed-loop client counts")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    load_before = os.getloadavg()
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-native-bf16-") as tmp:
        root = Path(tmp)
        build(root)
        proc, port = start(root)
        try:
            accuracy = errors(port)
            for rep in range(args.repeats):
                order = list(MODELS.items())[:: 1 if rep % 2 == 0 else -1]
                for datatype, model in order:
                    settings = BenchSettings(
                        url=f"127.0.0.1:{port}",
                        model=model,
                        http_format="binary",
                        concurrency=levels,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        seed=0,
                    )
                    print(f"[bench] {model} (repeat {rep + 1})", file=sys.stderr, flush=True)
                    for step in run_bench(settings, Progress(sys.stderr)).steps:
                        results.setdefault((datatype, int(step.level)), []).append(
                            (step.throughput, step.latency.p99 * 1000)
                        )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    load_after = os.getloadavg()
    rows = []
    for level in levels:
        med = {
            dt: (
                statistics.median(r for r, _ in results[(dt, level)]),
                statistics.median(p for _, p in results[(dt, level)]),
            )
            for dt in MODELS
        }
        for dt in MODELS:
            rows.append(
                {
                    "date": _report.today(),
                    "commit": _report.commit(),
                    "weights": dt,
                    "concurrency": level,
                    "req_per_s": round(med[dt][0], 1),
                    "p99_ms": round(med[dt][1], 2),
                    "req_ratio_vs_fp32": round(_paired(results, dt, level, 0), 3),
                    "p99_ratio_vs_fp32": round(_paired(results, dt, level, 1), 3),
                    "max_abs_err": f"{accuracy[dt][0]:.3g}",
                    "max_rel_err": f"{accuracy[dt][1]:.3g}",
                    "repeats": args.repeats,
                }
            )
    table = _report.markdown_table(
        ["weights", "clients", "req/s", "p99 ms", "req/s vs FP32", "p99 vs FP32", "max abs err",
         "max rel err"],
        [
            [r["weights"], r["concurrency"], r["req_per_s"], r["p99_ms"],
             f"{r['req_ratio_vs_fp32']:.2f}x", f"{r['p99_ratio_vs_fp32']:.2f}x",
             r["max_abs_err"], r["max_rel_err"]]
            for r in rows
        ],
    )  # fmt: skip
    print(table)
    if args.no_write:
        return 0
    _report.append_csv(CSV, rows)
    loads = f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (1-minute load average)"
    _report.write_section(
        "native-bf16",
        f"""## Native backend: the MLP with BF16 weights against FP32 (issue 18)

`{_report.command_line()}` on {_report.machine()}, {_report.today()}, commit {_report.commit()};
load {loads}. One `accelserve serve` with both models (one CPU instance each, dynamic
batching up to 64); V2 HTTP binary tensors, closed-loop clients, {args.duration:g} s per level,
medians of {args.repeats} repeats alternating the order (ratios: the median of each repeat's
ratio). Errors: 64 fixed rows through the
server against the float64 reference (the BF16 model gets the rows rounded to BF16).

{table}

The native CPU path computes in float32 from float32 copies of the weights made at load for
16-bit models (`backends/native.py`), so BF16 weights halve the bytes on disk and on the wire
but not the arithmetic: the BF16 model adds a cast of its input to float32 and of its output to
BF16 per batch (about 2 and 2-10 us at 1-16 rows), and its error is BF16's rounding of the
weights, the input and the output. A gain from BF16 arithmetic itself (AVX-512 BF16 dot
products) would need a BF16 kernel, which the native backend does not have.
""",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
