"""The MiniLM example served with its FP32 transformer and with the version ``accelserve
optimize`` chose, under 32 concurrent clients; plus the accuracy of the chosen version on
held-out text (never seen by the optimizer) against FP32.

    python -m benchmarks.server.bench_optimize_minilm \\
        --source-repository examples/model_repository [--repeats 3] [--duration 15]

In one run:
1. the example's four MiniLM models are copied into a scratch repository;
2. ``accelserve.optimize`` runs on ``minilm_transformer`` with a text corpus (sentences of 6 to
   40 words, seed 7) through the ensemble, writing the chosen candidate as version 2 (or
   ``--optimized FILE`` is used as version 2 directly, skipping the search);
3. held-out accuracy: other sentences (seed 11) through the whole ensemble in process, with
   version 1 and version 2 of the transformer: cosine of the sentence embeddings (mean, min);
4. throughput: ``accelserve serve`` on the repository, pinned to version 1 or 2 by the version
   policy, alternating FP32 / optimized ``--repeats`` times, each driven by the load generator
   (32 clients, one sentence per request, V2 binary); medians and the load average are reported.
Writes benchmarks/results/bench_optimize_minilm_cpu.csv (bench_optimize_minilm.csv: the runs
before the CPU-time column) and docs/PERFORMANCE.md's
``server-optimize-minilm`` block.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from accelserve.tools.bench import BenchSettings, run_bench  # noqa: E402
from accelserve.tools.bench.runner import Progress  # noqa: E402
from accelserve.tools.optimize.apply import serve_version, write_version  # noqa: E402
from benchmarks import _report  # noqa: E402
from benchmarks.server.bench_embeddings import sentences  # noqa: E402

MODELS = ("minilm", "minilm_tokenizer", "minilm_transformer", "minilm_head")


def copy_repository(source: Path, dest: Path) -> Path:
    for name in MODELS:
        if not (source / name / "config.pbtxt").is_file():
            raise SystemExit(f"{source / name}: missing; run `accelserve prepare-examples` first")
        shutil.copytree(source / name, dest / name, ignore=shutil.ignore_patterns("*.bak"))
    transformer = dest / "minilm_transformer"
    for extra in sorted(p for p in transformer.iterdir() if p.is_dir() and p.name != "1"):
        shutil.rmtree(extra)  # versions an earlier optimize left: start from the example's
    return dest


def embeddings(repository: Path, version: int, texts: list[str]) -> np.ndarray:
    import accelserve

    serve_version(repository / "minilm_transformer", version)
    model = accelserve.load(str(repository / "minilm"))
    try:
        return np.concatenate([model.infer({"text": [t]})["embedding"] for t in texts])
    finally:
        model.close()


def serve_and_measure(repository: Path, version: int, data: Path, args: argparse.Namespace) -> dict:
    serve_version(repository / "minilm_transformer", version)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    command = [
        sys.executable,
        "-m",
        "accelserve.cli",
        "serve",
        "--model-repository",
        str(repository),
    ]
    command += ["--http-port", str(port), "--grpc-port", "0", "--metrics-port", "0"]
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [*command, "--log-level", "warning"], stdout=log, stderr=log, env=env
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"server exited: {log.read().decode()[-2000:]}")
                try:
                    if (
                        httpx.get(f"http://127.0.0.1:{port}/v2/models/minilm/ready").status_code
                        == 200
                    ):
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            served = httpx.get(f"http://127.0.0.1:{port}/v2/models/minilm_transformer").json()
            assert served["versions"] == [str(version)], served
            settings = BenchSettings(
                url=f"127.0.0.1:{port}",
                model="minilm",
                concurrency=[args.concurrency],
                duration_s=args.duration,
                warmup_s=args.warmup,
                input_data=str(data),
                shapes={"text": [1]},
                timeout_s=60.0,
            )
            cpu0 = _tree_cpu_s(proc.pid)
            step = run_bench(settings, Progress(sys.stderr)).steps[0]
            cpu_s = _tree_cpu_s(proc.pid) - cpu0
        finally:
            proc.terminate()
            proc.wait(30)
    return {
        "rate": step.throughput,
        "p99_ms": step.latency.p99 * 1e3,
        "failed": step.failed,
        "load": (load0 + os.getloadavg()[0]) / 2,
        # the server's CPU time per sentence (the warm-up assumed at the measured rate): on a
        # shared machine, less disturbed by other work than sentences/s
        "cpu_ms": cpu_s * 1e3 / max(step.throughput * (args.duration + args.warmup), 1e-9),
    }


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    tree, total, grew = {pid}, 0.0, True
    while grew:
        grew = False
        for child, (parent, _) in stats.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    for member in tree:
        total += stats.get(member, (0, 0.0))[1]
    return total


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-repository", default=str(ROOT / "examples" / "model_repository"))
    parser.add_argument("--optimized", default=None, help="use this model file as version 2")
    parser.add_argument("--label", default="given file", help="the --optimized file's name")
    parser.add_argument("--candidates", default="int8-smooth-matmul,int8-fusion-smooth")
    parser.add_argument("--corpus-size", type=int, default=200, help="optimizer's sentences")
    parser.add_argument("--held-out", type=int, default=300, help="accuracy sentences")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    import json

    import accelserve

    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as tmp:
        repository = copy_repository(Path(args.source_repository), Path(tmp) / "models")
        transformer = repository / "minilm_transformer"
        chosen = args.label
        if args.optimized:
            write_version(transformer, Path(args.optimized), "model.onnx", {"candidate": "given"})
        else:
            corpus = Path(tmp) / "corpus.txt"
            corpus.write_text("\n".join(sentences(args.corpus_size, seed=7)) + "\n")
            result = accelserve.optimize(
                str(transformer),
                text_file=str(corpus),
                candidates=args.candidates,
                max_samples=args.corpus_size,
                duration_s=5.0,
                stream=sys.stderr,
            )
            if result.chosen is None:
                print(
                    "optimize chose nothing: the FP32 version stays; no comparison", file=sys.stderr
                )
                return 1
            chosen = result.chosen.label
        held_out = sentences(args.held_out, seed=11)
        reference, optimized = (
            embeddings(repository, 1, held_out),
            embeddings(repository, 2, held_out),
        )
        cos = np.sum(reference * optimized, 1) / (
            np.linalg.norm(reference, axis=1) * np.linalg.norm(optimized, axis=1)
        )
        data = Path(tmp) / "sentences.json"
        data.write_text(json.dumps({"data": [{"text": [t]} for t in sentences(512, seed=3)]}))
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for version in (1, 2) if repeat % 2 == 0 else (2, 1):
                runs[version].append(serve_and_measure(repository, version, data, args))
                print(f"[bench] version {version}: {runs[version][-1]}", file=sys.stderr)
    med = {
        v: {k: statistics.median(r[k] for r in rs) for k in ("rate", "p99_ms", "load", "cpu_ms")}
        for v, rs in runs.items()
    }
    ratio = med[2]["rate"] / med[1]["rate"]
    cos_mean, cos_min = float(np.mean(cos)), float(np.min(cos))
    met = ratio >= 2.0 and cos_mean >= 0.995 and cos_min >= 0.99
    rows = [
        [
            "FP32 (version 1)",
            f"{med[1]['rate']:,.0f}",
            f"{med[1]['p99_ms']:.1f}",
            "1.00x",
            "1",
            "1",
            f"{med[1]['load']:.1f}",
            f"{med[1]['cpu_ms']:.2f}",
            "1.00x",
        ],
        [
            f"{chosen} (version 2)",
            f"{med[2]['rate']:,.0f}",
            f"{med[2]['p99_ms']:.1f}",
            f"{ratio:.2f}x",
            f"{cos_mean:.4f}",
            f"{cos_min:.4f}",
            f"{med[2]['load']:.1f}",
            f"{med[2]['cpu_ms']:.2f}",
            f"{med[1]['cpu_ms'] / med[2]['cpu_ms']:.2f}x",
        ],
    ]
    header = ["transformer", "sentences/s", "p99 ms", "vs FP32", "cos mean", "cos min", "load avg"]
    header += ["server CPU ms/sentence", "CPU vs FP32"]
    md = (
        f"### accelserve optimize: MiniLM ensemble, FP32 vs the chosen version ({_report.today()}, "
        f"commit {_report.commit()})\n\n{_report.machine()}; {args.concurrency} clients, one "
        f"sentence per request, V2 binary over HTTP; medians of {args.repeats} interleaved runs of "
        f"{args.duration:g} s; accuracy on {args.held_out} held-out sentences (not the optimizer's) "
        f"through the whole ensemble.\n\n{_report.markdown_table(header, rows)}\n\n"
        f"Target (>= 2.0x, mean cosine >= 0.995, min >= 0.99): {'met' if met else 'not met'}. "
        f"The load average is the machine's 1-minute average during each run (shared machine). "
        f"Server CPU ms/sentence: the server process tree's user+system CPU time over the run "
        f"(warm-up included, assumed at the measured rate) per sentence; other work on the "
        f"machine slows sentences/s but disturbs it less, so its ratio is the steadier figure "
        f"on a busy machine.\n\n"
        f"Command: `{_report.command_line()}`\n"
    )
    print(md)
    _report.append_csv(
        _report.result_path("bench_optimize_minilm_cpu.csv"),
        [
            {
                "date": _report.today(),
                "commit": _report.commit(),
                "variant": r[0],
                "sentences_per_s": r[1],
                "p99_ms": r[2],
                "ratio": r[3],
                "cos_mean": r[4],
                "cos_min": r[5],
                "load_avg": r[6],
                "server_cpu_ms_per_sentence": r[7],
                "machine": _report.machine(),
            }
            for r in rows
        ],
    )
    _report.write_section("server-optimize-minilm", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
