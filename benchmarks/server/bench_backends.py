"""One small net served by the ONNX Runtime, PyTorch, JAX, TensorFlow and native backends on CPU.

    .venv/bin/python benchmarks/server/bench_backends.py [--net mlp|seed] [--backends onnx,native,tf]
        [--baseline REV] [--repeats 5]

The net (``--net mlp``, the default: 256 -> 512 -> 512 -> 256, exact GELU, FP32, fixed-seed
weights; ``--net seed``: the seed document's ``y = x W + b``, W 2x2, b zeros; see mlp_models.py)
is written once per format with identical weights (TensorFlow's as a SavedModel). Every model has
the same config: max_batch_size 64, dynamic batching, one CPU instance, each framework's default
threads.

In process: a fresh process per backend loads it, checks its output against a float64 NumPy
reference (allclose, or the run stops) and times ``backend.infer`` at batch 1 and 16 (no
server: the backend's own cost). Served: each repeat starts one ``accelserve serve`` per
backend, one at a time, in an order rotated between repeats; the server must answer a fixed
request with the reference's values before it counts as ready; ``accelserve.tools.bench`` then
drives it over V2 HTTP with binary tensors (the same seeded inputs for every backend) at each
concurrency. Medians over repeats.

Why one process per backend (``--layout separate``, the default) rather than one process with
all of them: on 2 cores, a process that also holds the other frameworks' thread pools (ONNX
Runtime's spinning intra-op threads, PyTorch's OpenMP pool, XLA's) measures their interplay as
much as the backend, and a model served alone is what a user who picks one backend runs.
``--layout shared`` serves all of them from one process instead, for comparison.

``--baseline REV`` adds one more entry, measured in the same run: this checkout's ``src/`` with
the native backend and the CPU kernels (``BASELINE_PATHS``) as of git revision REV, copied to a
temporary directory put first on PYTHONPATH (of its in-process worker and of its server).
Writes benchmarks/results/bench_backends.csv and docs/PERFORMANCE.md's ``server-backends`` block
(``server-backends-seed`` for ``--net seed``), with whether the native backend is within 20% of
the fastest backend's req/s (issue 6). TensorFlow Serving's own server is not measured: its
binary ships as a Docker image or from Google's apt repository, neither available here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accelserve.tools.bench import BenchSettings, run_bench  # noqa: E402
from accelserve.tools.bench.runner import Progress  # noqa: E402
from benchmarks.server import mlp_models as mlp  # noqa: E402
from benchmarks.server.bench_backends_report import (  # noqa: E402
    ATOL,
    BASE,
    BATCHES,
    LABELS,
    RTOL,
    Entry,
    write,
)
from benchmarks.server.peers import launch  # noqa: E402

# -- in process (one worker process per entry) ----------------------------------------------


def worker(model_dir: Path, seconds: float, repeats: int, net: mlp.Net) -> dict[str, object]:
    """Load one backend, check it against the reference, time ``infer``: run as ``--worker``."""
    import accelserve
    from accelserve.config import parse_config
    from accelserve.devices import Device
    from accelserve.repository import load_backend

    config = parse_config((model_dir / "config.pbtxt").read_text())
    backend = load_backend(model_dir / "1", config, Device("cpu", 0))
    x = np.random.default_rng(123).standard_normal((16, net.inputs)).astype(np.float32)
    want = mlp.reference(x, mlp.make_params(net), net)
    got = backend.infer({mlp.INPUT: x})[mlp.OUTPUT]
    if got.shape != want.shape or not np.allclose(got, want, atol=ATOL, rtol=RTOL):
        raise SystemExit(f"{model_dir.name}: output differs from the reference")
    timings: dict[int, list[float]] = {}
    for _ in range(repeats):
        for batch in BATCHES:
            rows = np.random.default_rng(batch).standard_normal((batch, net.inputs))
            inputs = {mlp.INPUT: rows.astype(np.float32)}
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < 0.1:  # warm-up (JAX compiles each batch size)
                backend.infer(inputs)
            n, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds:
                backend.infer(inputs)
                n += 1
            timings.setdefault(batch, []).append(elapsed / n * 1e6)
    backend.unload()
    return {
        "error": float(np.abs(got - want).max()),
        "us": timings,
        "accelserve": str(Path(accelserve.__file__).parent),
    }


def in_process(entry: Entry, model_dir: Path, args: argparse.Namespace) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(model_dir)]
    cmd += ["--inproc-seconds", str(args.inproc_seconds), "--repeats", str(args.repeats)]
    cmd += ["--net", args.net.name]
    done = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **entry.env}, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{entry.name}: in-process worker failed: {done.stderr[-2000:]}")
    result = json.loads(lines[-1])
    entry.error = result["error"]
    entry.inproc_us = {int(b): v for b, v in result["us"].items()}
    print(f"[bench] {entry.name}: accelserve from {result['accelserve']}", file=sys.stderr)


# -- served ---------------------------------------------------------------------------------


def ready_check(models: list[str], x: np.ndarray, want: np.ndarray) -> Callable[[int], bool]:
    """Ready when every model answers ``x`` with ``want`` (a wrong answer stops the run)."""
    tensor = {"name": mlp.INPUT, "datatype": "FP32", "shape": list(x.shape)}
    body = json.dumps({"inputs": [tensor | {"data": x.ravel().tolist()}]}).encode()

    def check(port: int) -> bool:
        for model in models:
            outputs = launch.infer_outputs(port, model, body)
            if outputs is None:
                _raise_if_failed(port, model)
                return False
            got = {o.get("name"): o.get("data") for o in outputs}.get(mlp.OUTPUT)
            if got is None or len(got) != want.size:
                return False
            if not np.allclose(np.reshape(got, want.shape), want, atol=ATOL, rtol=RTOL):
                raise launch.PeerError(f"{model} answers, but not the reference's values")
        return True

    return check


def _raise_if_failed(port: int, model: str) -> None:
    """A server that is up but failed to load ``model`` never gets ready: say so at once."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/repository/index", data=b"{}", method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            rows = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return  # not up yet
    for row in rows if isinstance(rows, list) else []:
        if row.get("name") == model and row.get("state") == "UNAVAILABLE":
            raise launch.PeerError(f"{model} failed to load: {row.get('reason', '')[:200]}")


def start_server(
    repo: Path, check: Callable[[int], bool], env: dict[str, str], args: argparse.Namespace
) -> launch.RunningPeer:
    port = launch.free_port()
    cmd = [sys.executable, "-m", "accelserve.cli", "serve", "--model-repository", str(repo)]
    cmd += ["--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0"]
    launch.LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = launch.LOG_DIR / f"backends-{repo.name}.log"
    t0 = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*cmd, "--log-level", "warning"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
        )
    peer = launch.RunningPeer(repo.name, repo.name, "binary", proc, port, None, log_path)
    return launch.wait_ready(peer, check, t0, args.ready_timeout, poll_s=0.1)


def drive(port: int, entry: Entry, args: argparse.Namespace) -> None:
    settings = BenchSettings(
        url=f"127.0.0.1:{port}",
        model=mlp.model_name(entry.backend, args.net),
        http_format="binary",
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        seed=0,  # the same input sets for every backend
    )
    print(f"[bench] {entry.name}", file=sys.stderr, flush=True)
    for step in run_bench(settings, Progress(sys.stderr)).steps:
        entry.steps.setdefault(int(step.level), []).append(step)


def served(root: Path, entries: list[Entry], args: argparse.Namespace) -> None:
    net = args.net
    x = np.random.default_rng(7).standard_normal((2, net.inputs)).astype(np.float32)
    want = mlp.reference(x, mlp.make_params(net), net)
    for rep in range(args.repeats):
        order = entries[rep % len(entries) :] + entries[: rep % len(entries)]
        if args.layout == "shared":
            names = [mlp.model_name(e.backend, net) for e in entries if e.name != BASE]
            peer = start_server(root / "all", ready_check(names, x, want), {}, args)
            try:
                for entry in order:
                    if entry.name != BASE:
                        drive(peer.port, entry, args)
            finally:
                peer.stop()
            continue
        for entry in order:
            check = ready_check([mlp.model_name(entry.backend, net)], x, want)
            try:
                peer = start_server(root / entry.backend, check, entry.env, args)
            except launch.PeerError as exc:  # this repeat goes without it; the next tries again
                entry.skipped = str(exc)[:300]
                entry.failed_starts += 1
                print(f"[bench] SKIPPING {entry.name}: {exc}", file=sys.stderr, flush=True)
                continue
            try:
                drive(peer.port, entry, args)
            finally:
                peer.stop()


def busy_fraction(seconds: float) -> float:
    """Share of all cores busy over ``seconds`` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (up to ``limit_s``) until other work leaves the cores idle; the last busy share."""
    deadline = time.monotonic() + limit_s
    busy = busy_fraction(1.0)
    while busy > threshold and time.monotonic() < deadline:
        busy = busy_fraction(2.0)
    return busy


BASELINE_PATHS = (
    "src/accelserve/backends/native.py",
    "src/accelserve/backends/native_format.py",
    "src/accelserve/kernels/cpu",
)


def export_baseline(rev: str, target: Path) -> str:
    """This checkout's ``src/`` copied to ``target``, with the native backend and the CPU
    kernels (``BASELINE_PATHS``) as of ``rev``: the baseline differs from the measured tree
    in those files only. Returns ``rev``'s short hash."""
    short = subprocess.check_output(["git", "rev-parse", "--short", rev], cwd=ROOT, text=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", target / "src", ignore=ignore)
    for path in BASELINE_PATHS:
        shutil.rmtree(target / path, ignore_errors=True)
        (target / path).unlink(missing_ok=True)
        listed = subprocess.run(
            ["git", "ls-tree", "--name-only", rev, path], cwd=ROOT, capture_output=True, text=True
        ).stdout
        if not listed.strip():
            continue  # not in rev (a file split out later): the baseline has it nowhere else
        archive = subprocess.run(
            ["git", "archive", rev, path], cwd=ROOT, capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return short.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", choices=tuple(mlp.NETS), default=mlp.MLP.name)
    parser.add_argument("--backends", default=",".join(mlp.BACKENDS), help="comma-separated")
    parser.add_argument(
        "--baseline",
        default="",
        help="git revision: also serve this checkout with native.py and kernels/cpu/ as of it",
    )
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per step")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per step")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--inproc-seconds", type=float, default=0.3, help="per batch and repeat")
    parser.add_argument("--layout", choices=("separate", "shared"), default="separate")
    parser.add_argument("--ready-timeout", type=float, default=60.0)
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="max wait for idle cores")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.net = mlp.NETS[args.net]
    if args.worker:
        print(json.dumps(worker(Path(args.worker), args.inproc_seconds, args.repeats, args.net)))
        return 0
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = sorted(set(names) - set(mlp.BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; known: {list(mlp.BACKENDS)}")
    t0 = time.perf_counter()
    entries = [Entry(n, LABELS[n]) for n in names]
    with tempfile.TemporaryDirectory(prefix="accelserve-bench-backends-") as tmp:
        root = Path(tmp)
        models = mlp.build(root, names, mlp.make_params(args.net), args.net)
        if args.baseline:
            if "native" not in names:
                parser.error("--baseline needs the native backend in --backends")
            short = export_baseline(args.baseline, root / "base")
            env = {"PYTHONPATH": str(root / "base" / "src")}
            entries.append(Entry(BASE, f"native, baseline {short}", env))
        busy = wait_for_quiet(args.quiet_wait)
        for entry in entries:
            busy = max(busy, wait_for_quiet(args.quiet_wait))  # a shared machine: 2 cores
            in_process(entry, models[entry.backend], args)
        busy = max(busy, wait_for_quiet(args.quiet_wait))
        load = os.getloadavg()[0]
        served(root, entries, args)
    elapsed = time.perf_counter() - t0
    return write(entries, args, busy, load, elapsed, os.getloadavg()[0])


if __name__ == "__main__":
    sys.exit(main())
