"""Sentence embeddings (all-MiniLM-L6-v2) served by accelserve and its peers, against the offline
ceiling, with 32 concurrent clients each sending one sentence (6 to 40 words) per request.

    bash benchmarks/server/peers/setup.sh      # once; the peers also need onnxruntime, tokenizers
    .venv/bin/python benchmarks/server/bench_embeddings.py [--repeats 3] [--duration 15]

In one run:
1. offline ceiling: the same ONNX model called in this process (tokenization included, one
   batch after another) at batch sizes 1..64; the best is the ceiling, and the time of one
   batch of 32 sentences ("one full batch") sets the p99 target (4x);
2. the embedding head: accelserve's kernel (transformer -> masked_mean_pool_l2) against pooling
   inside the ONNX graph, offline per batch and served end to end;
3. token-aware batching: accelserve with max_batch_tokens against plain row batching;
4. peers on the same ONNX and tokenizer files: Triton (tritonserver binary, Python backend,
   dynamic batching), Ray Serve (@serve.batch), LitServe (batching).
Each server is started alone, driven with accelserve's load generator in this process (V2 binary
tensors for accelserve and Triton, V2 JSON for Ray Serve and LitServe), and stopped; medians over
repeats. Writes benchmarks/results/bench_embeddings.csv and docs/PERFORMANCE.md's `server-embeddings` block.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from accelserve.tools.export.sentence_transformer import ExportOptions  # noqa: E402
from benchmarks import _report  # noqa: E402
from benchmarks.server.bench_embeddings_report import report  # noqa: E402
from benchmarks.server.embeddings_offline import offline  # noqa: E402
from benchmarks.server.embeddings_servers import WORK, Server, measure, wait_for_quiet  # noqa: E402

_WORD_TEXT = (
    "the of and to in is was for on that with as by at from his her it an were are which this "
    "be or has had not but their they one new first also its after who been two more when other "
    "than into time there all only most some can would over up made during out years such about "
    "may three where these many then between people no both later through because under part "
    "them being however use used state national world like while could known since last same "
    "before university high see day city county film year government called season including "
    "team school second number early several century family american north south war river "
    "music church house water light model server batch token vector search query answer data"
)
WORDS = _WORD_TEXT.split()


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences of 6 to 40 words (uniform), reproducible."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, int(rng.integers(6, 41)))) for _ in range(n)]


# -- models ------------------------------------------------------------------------------------


def prepare_models(max_batch_tokens: int) -> dict[str, tuple[Path, ExportOptions]]:
    """Model repositories under benchmarks/.peers/minilm, one per accelserve configuration:
    the example's (``examples_minilm.OPTIONS``) and the variants it is compared with."""
    import dataclasses
    import shutil

    from accelserve.tools.examples.minilm import OPTIONS, SOURCE
    from accelserve.tools.export.sentence_transformer import export_sentence_transformer

    default = dataclasses.replace(OPTIONS, max_batch_tokens=max_batch_tokens)
    plain = dataclasses.replace(default, max_batch_tokens=0, chunk_overhead_tokens=0)
    variants = {
        "default": default,
        "unchunked": dataclasses.replace(default, chunk_overhead_tokens=0),
        "rows": plain,
        "onnx": dataclasses.replace(default, pooling="onnx"),
        "single": dataclasses.replace(plain, instances=1, threads=0),
    }
    repos = {}
    for name, options in variants.items():
        repo = WORK / name
        shutil.rmtree(repo, ignore_errors=True)
        export_sentence_transformer(SOURCE, repo, "minilm", options)
        repos[name] = (repo, options)
    return repos


def describe(options: ExportOptions) -> str:
    head = "kernel head" if options.pooling == "kernel" else "ONNX pooling"
    batching = f"tokens {options.max_batch_tokens}" if options.max_batch_tokens else "rows"
    if options.chunk_overhead_tokens:
        batching += f", chunks {options.chunk_overhead_tokens}"
    threads = options.threads or "default"
    return f"{head}, {options.instances} x {threads} threads, {batching}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="accelserve,triton,ray,litserve")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="offline ceiling's ONNX Runtime intra-op threads"
    )
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--offline-sentences", type=int, default=256)
    parser.add_argument(
        "--max-batch-tokens", type=int, default=512, help="the token-aware configurations' budget"
    )
    parser.add_argument("--ready-timeout", type=float, default=240.0)
    parser.add_argument(
        "--quiet-wait", type=float, default=120.0, help="max seconds to wait for idle cores"
    )
    parser.add_argument("--attempts", type=int, default=3, help="tries per disturbed run")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.10,
        help="other work's share of the cores above which a run is repeated",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    repos = prepare_models(args.max_batch_tokens)
    texts = sentences(args.sentences)
    data_file = WORK / "sentences.json"
    data_file.write_text(json.dumps({"data": [{"text": [t]} for t in texts]}))
    wait_for_quiet(args.quiet_wait)
    off = offline(repos["default"][0], repos["onnx"][0], texts, args)
    servers = [
        Server(f"accelserve ({describe(options)})", "accelserve", repo, "binary")
        for repo, options in repos.values()
        if "accelserve" in kinds
    ]
    labels = {"triton": "Triton (Python backend)", "ray": "Ray Serve", "litserve": "LitServe"}
    wires = {"triton": "binary", "ray": "json", "litserve": "json"}
    tuned = repos["default"][1]
    for kind in (k for k in kinds if k in labels):
        for instances, threads in ((tuned.instances, tuned.threads), (1, 0)):
            label = f"{labels[kind]} ({instances} x {threads or 'default'} threads)"
            servers.append(Server(label, kind, repos["onnx"][0], wires[kind], instances, threads))
    args.default_label = servers[0].name if servers else ""
    for rep in range(args.repeats):
        order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
        for server in order:
            if server.skipped and not server.steps:
                continue
            measure(server, data_file, args)
    elapsed = time.perf_counter() - t0
    md, csv_rows = report(off, servers, args, elapsed, load)
    print(md)
    if not args.no_write:
        _report.append_csv(_report.result_path("bench_embeddings.csv"), csv_rows)
        _report.write_section("server-embeddings", md)
        print(
            "[bench] wrote benchmarks/results/bench_embeddings.csv and docs/PERFORMANCE.md",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
