"""Server start-up: time to ready and resident memory after warm-up, against a baseline.

    python -m benchmarks.server.bench_startup [--repeats 5] [--baseline REV]

Cases: ``examples`` serves examples/model_repository (``simple``, ``linear`` and the MiniLM
ensemble, whose ONNX transformer has two CPU instances); ``simple`` serves a copy holding only
``simple``. Each run starts ``python -m accelserve.cli serve`` (the ``accelserve`` console
script's entry point) as a fresh process with gRPC and metrics on, as a default server runs, and
times from just before the process is spawned to the first 200 from ``/v2/health/ready`` (polled
every 10 ms). It then sends warm-up requests to each model (8 per model, two at a time, so both
transformer instances run) and reads the process's resident memory (psutil RSS, the process tree)
and which frameworks its memory maps hold (``/proc/PID/maps``: libtorch, jaxlib's XLA,
TensorFlow). Medians over ``--repeats``; the variants alternate within each repeat.

``--baseline REV`` also measures REV: its ``src/``, exported (``git archive``) into a temporary
folder, is put first on PYTHONPATH, on the same repositories in the same run. Writes
benchmarks/results/bench_startup.csv and docs/PERFORMANCE.md's ``server-startup`` block.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _report  # noqa: E402
from benchmarks.server.bench_backends import wait_for_quiet  # noqa: E402
from benchmarks.server.peers import launch  # noqa: E402

EXAMPLES = ROOT / "examples" / "model_repository"
CSV = _report.result_path("bench_startup.csv")
SECTION = "server-startup"
FRAMEWORK_LIBRARIES = {"torch": "libtorch", "jax": "/jaxlib/", "tensorflow": "libtensorflow"}
# (case, what is measured, limit, unit): issue 11 item 7
TARGETS = (
    ("examples", "ready_s", 1.2, "s"),
    ("examples", "rss_mib", 400.0, "MiB"),
    ("simple", "rss_mib", 150.0, "MiB"),
)
_TEXTS = [
    "A man is playing a guitar.",
    "The new movie is awesome, and the whole theatre laughed at the end of it.",
    "Accelerators serve predictions in real time when the batch fits the device.",
    "short",
]
# model -> one request body per warm-up call; models not named here are not warmed up
WARMUP: dict[str, list[dict[str, object]]] = {
    "simple": [
        {
            "inputs": [
                {"name": n, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))}
                for n in ("INPUT0", "INPUT1")
            ]
        }
    ],
    "linear": [
        {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
    ],
    "minilm": [
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": [t]}]}
        for t in _TEXTS
    ],
}
REQUESTS_PER_MODEL = 8


@dataclass
class Variant:
    name: str  # "this tree" or "baseline <hash>"
    revision: str
    src: Path
    runs: dict[str, list[dict[str, object]]] = field(default_factory=dict)  # case -> rows


def measure(variant: Variant, case: str, repo: Path, args: argparse.Namespace) -> dict[str, object]:
    port = launch.free_port()
    cmd = [sys.executable, "-m", "accelserve.cli", "serve", "--model-repository", str(repo)]
    cmd += ["--http-port", str(port), "--grpc-port", str(launch.free_port())]
    cmd += ["--metrics-port", str(launch.free_port()), "--log-level", "warning"]
    env = {**os.environ, "PYTHONPATH": str(variant.src)}
    launch.LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = launch.LOG_DIR / f"startup-{case}.log"
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    peer = launch.RunningPeer(case, variant.name, "json", proc, port, None, log_path)
    try:
        while not _ready(port):
            if proc.poll() is not None or time.perf_counter() - t0 > args.ready_timeout:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
                raise launch.PeerError(f"{variant.name} on {case} never got ready: {tail[0]}")
            time.sleep(0.01)
        ready_s = time.perf_counter() - t0
        warmed = warm_up(port)
        rss = peer.rss_bytes()
        frameworks = sorted(
            name for name, lib in FRAMEWORK_LIBRARIES.items() if _maps(proc.pid, lib)
        )
    finally:
        peer.stop()
    return {
        "ready_s": round(ready_s, 3),
        "rss_mib": round(rss / 2**20, 1),
        "frameworks": " ".join(frameworks) or "none",
        "warmed": " ".join(warmed),
    }


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except (OSError, urllib.error.URLError):
        return False


def warm_up(port: int) -> list[str]:
    """Send each served model its warm-up requests, two at a time; the models warmed."""
    models = [m for m in WARMUP if _ready_model(port, m)]
    calls = [(m, WARMUP[m][i % len(WARMUP[m])]) for m in models for i in range(REQUESTS_PER_MODEL)]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda call: _infer(port, *call), calls))
    return models


def _ready_model(port: int, model: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{model}/ready") as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def _infer(port: int, model: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        json.loads(response.read())


def _maps(pid: int, library: str) -> bool:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as f:
        return any(library in line for line in f)
    return False


def baseline_sources(rev: str, parent: Path) -> Variant:
    """REV's ``src/`` exported under ``parent`` (removed with it)."""
    short = launch.export_source(rev, parent / "baseline")
    return Variant(f"baseline {short}", short, parent / "baseline" / "src")


def simple_only(parent: Path) -> Path:
    repo = parent / "simple_only"
    shutil.copytree(EXAMPLES / "simple", repo / "simple")
    return repo


def median(variant: Variant, case: str, key: str) -> float:
    return statistics.median(float(row[key]) for row in variant.runs[case])  # type: ignore[arg-type]


def report(
    variants: list[Variant], cases: dict[str, Path], args: argparse.Namespace, busy: float
) -> str:
    rows = []
    for case in cases:
        for v in variants:
            ready = [float(r["ready_s"]) for r in v.runs[case]]  # type: ignore[arg-type]
            rss = [float(r["rss_mib"]) for r in v.runs[case]]  # type: ignore[arg-type]
            rows.append(
                [
                    case,
                    v.name,
                    f"{statistics.median(ready):.2f} ({min(ready):.2f}-{max(ready):.2f})",
                    f"{statistics.median(rss):.0f} ({min(rss):.0f}-{max(rss):.0f})",
                    v.runs[case][0]["frameworks"],
                    v.runs[case][0]["warmed"],
                ]
            )
    header = [
        "case",
        "server",
        "ready s, median (min-max)",
        "RSS MiB after warm-up",
        "frameworks mapped",
        "models warmed",
    ]
    current = variants[0]
    targets = []
    for case, key, limit, unit in TARGETS:
        if case in cases:
            value = median(current, case, key)
            met = "met" if value <= limit else "not met"
            what = "ready" if key == "ready_s" else "resident memory"
            targets.append(
                f"- `{case}` {what} at most {limit:g} {unit}: {value:.2f} {unit}: **{met}**"
            )
    return f"""## Server start-up: time to ready and memory

Machine: {_report.machine()}; cores {busy:.0%} busy just before measuring (other work may
share this machine). Date {_report.today()}, commit {_report.commit()}.

Command: `{_report.command_line()}`

Each run starts `python -m accelserve.cli serve` (gRPC and metrics on) as a fresh process and
times it from spawn to the first 200 from `/v2/health/ready`; then {REQUESTS_PER_MODEL} warm-up
requests per model, two at a time, then the process's resident memory (RSS). `examples` is
examples/model_repository (`simple`, `linear`, the MiniLM ensemble with two ONNX transformer
instances); `simple` is a repository holding only `simple`. Frameworks mapped: which of
libtorch, jaxlib's XLA and TensorFlow the server's memory maps hold. Medians over
{args.repeats} repeats, the servers alternating within each repeat.

Issue 11 item 7's targets (this tree):

{chr(10).join(targets)}

{_report.markdown_table(header, rows)}
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", default="", help="git revision measured in the same run")
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--quiet-wait", type=float, default=120.0, help="max wait for idle cores")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if not (EXAMPLES / "simple" / "1" / "model.onnx").is_file():
        parser.error("build the example models first: accelserve prepare-examples")
    with tempfile.TemporaryDirectory(prefix="accelserve-bench-startup-") as tmp:
        variants = [Variant("this tree", _report.commit(), ROOT / "src")]
        if args.baseline:
            variants.append(baseline_sources(args.baseline, Path(tmp)))
        cases = {"examples": EXAMPLES, "simple": simple_only(Path(tmp))}
        busy = wait_for_quiet(args.quiet_wait)
        csv_rows = []
        for repeat in range(args.repeats):
            for case, repo in cases.items():
                for v in variants[repeat % 2 :] + variants[: repeat % 2]:
                    row = measure(v, case, repo, args)
                    v.runs.setdefault(case, []).append(row)
                    print(
                        f"[startup] {case} {v.name} #{repeat}: {row}", file=sys.stderr, flush=True
                    )
                    csv_rows.append(
                        {
                            "date": _report.today(),
                            "machine": _report.machine(),
                            "case": case,
                            "server": v.name,
                            "revision": v.revision,
                            "repeat": repeat,
                            **row,
                        }
                    )
    markdown = report(variants, cases, args, busy)
    print(markdown)
    if not args.no_write:
        _report.append_csv(CSV, csv_rows)
        _report.write_section(SECTION, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
