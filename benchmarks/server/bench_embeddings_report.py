"""bench_embeddings.py's report: the ceiling, head and served tables, the targets' verdict, the
CSV rows and docs/PERFORMANCE.md's `server-embeddings` block."""

from __future__ import annotations

import argparse
import math
import statistics
import sys

from benchmarks import _report
from benchmarks.server.embeddings_offline import Offline
from benchmarks.server.embeddings_servers import Server


def _f(x: float, nd: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:,.{nd}f}"


def report(
    off: Offline, servers: list[Server], args: argparse.Namespace, elapsed: float, load: float
) -> tuple[str, list[dict]]:
    best_batch, ceiling = off.best()
    full_batch_ms = statistics.median(off.batch32_s) * 1e3
    ceiling_rows = [
        [b, _f(statistics.median(v), 1), _f(b / statistics.median(v) * 1e3, 1)]
        for b, v in sorted(off.rate.items())
    ]
    head_rows = [
        [name, *(_f(statistics.median(by[size]), 1) for size in (8, 32))]
        for name, by in off.head_ms.items()
    ]
    peers = [s for s in servers if s.kind != "accelserve" and s.steps]
    best_peer = max((s.med("rate") for s in peers), default=math.nan)
    rows: list[list[object]] = []
    csv_rows: list[dict] = []
    for s in servers:
        if not s.steps:
            rows.append([s.name, s.wire, f"skipped: {s.skipped}", "", "", "", "", "", ""])
            continue
        rate, p50, p99 = s.med("rate"), s.med("p50"), s.med("p99")
        failed = sum(x.failed for x in s.steps)
        rows.append(
            [
                s.name,
                s.wire,
                _f(rate),
                _f(p50),
                _f(p99),
                f"{rate / ceiling:.2f}",
                f"{p99 / full_batch_ms:.2f}",
                failed,
                f"{max(s.busy_before, default=0):.0%}",
            ]
        )
        csv_rows.append(
            {
                "scenario": f"minilm-{args.concurrency}clients",
                "server": s.name,
                "wire": s.wire,
                "concurrency": args.concurrency,
                "repeats": len(s.steps),
                "rps_p50": round(rate, 1),
                "lat_p50_ms": round(p50, 2),
                "lat_p99_ms": round(p99, 2),
                "vs_ceiling": round(rate / ceiling, 3),
                "vs_best_peer": round(rate / best_peer, 3) if best_peer == best_peer else "",
                "failed": failed,
                "ready_s": round(statistics.median(s.ready_s), 2) if s.ready_s else "",
                "device": "cpu",
                "machine": _report.machine(),
                "commit": _report.commit(),
                "date": _report.today(),
            }
        )
    default = next((s for s in servers if s.name == args.default_label and s.steps), None)
    verdict = []
    if default is not None:
        rate, p99 = default.med("rate"), default.med("p99")
        verdict = [
            f"- served / offline ceiling: {rate:,.1f} / {ceiling:,.1f} = {rate / ceiling:.2f} "
            f"(target >= 0.85): {'met' if rate >= 0.85 * ceiling else 'NOT met'}",
            f"- above every peer: {rate:,.1f} vs best peer {_f(best_peer)}: "
            + ("met" if peers and rate > best_peer else "NOT met" if peers else "no peer measured"),
            f"- p99 {p99:,.1f} ms vs 4 x one full batch (32 sentences, {full_batch_ms:,.1f} ms) = "
            f"{4 * full_batch_ms:,.1f} ms: {'met' if p99 < 4 * full_batch_ms else 'NOT met'}",
        ]
    header = ["server", "wire", "sentences/s", "p50 ms", "p99 ms", "vs ceiling", "p99 / batch"]
    md = f"""## Sentence embeddings (all-MiniLM-L6-v2): accelserve vs offline ceiling, Triton, Ray Serve, LitServe

Machine: {_report.machine()}; load average {load:.2f} at start (a shared machine: other work
may run beside it). Date {_report.today()}, commit {_report.commit()}; run time {elapsed:.0f} s.
Workload: {args.concurrency} concurrent clients, each sending one sentence (6 to 40 words, uniform;
{args.sentences} distinct sentences) per request and waiting for the answer; load generator
`accelserve.tools.bench` in the benchmark's process on the same cores; each run {args.warmup:g} s
warm-up then {args.duration:g} s measured; medians over {args.repeats} repeats, servers started one
at a time. Dynamic batching up to 64 sentences everywhere.

**Offline ceiling**: the same tokenizer file and ONNX model in this process, one batch after
another (tokenize, run, pool; ONNX Runtime intra-op threads: {args.threads or "its default"}),
batch sizes 1 to 64: best {best_batch} at {ceiling:,.1f}
sentences/s; one full batch of 32 sentences takes {full_batch_ms:,.1f} ms. The batches hold the
sentences in arrival order, padded to their longest, as a server without length grouping sees
them; the served rows with `chunks` avoid most of that padding, which is how they pass it.

{_report.markdown_table(["batch", "sentences/s", "ms per batch"], ceiling_rows)}

**Embedding head**, offline, ms per batch (tokenize + transformer + head), the same batches:
`kernel` = transformer to token embeddings, then `accelserve.kernels.masked_mean_pool_l2`
(numba, CPU); `onnx` = mean pooling and L2 normalization inside the ONNX graph.

{_report.markdown_table(["head", "batch 8 ms", "batch 32 ms"], head_rows)}

**Served** ({args.concurrency} clients; "vs ceiling" = sentences/s over the offline ceiling; "p99 /
batch" = p99 over one full batch). Each row names the instances x ONNX Runtime threads per
instance of the transformer (peers: Triton instances, Ray Serve replicas, LitServe workers); the
peers serve the ONNX-pooled graph (their best) with the same tokenizer file, at accelserve's
setting and at one instance with ONNX Runtime's default threads. accelserve's rows also name the
head and the batching (`rows`: capped by rows only; `tokens N`: max_batch_tokens N, similar
lengths grouped; `chunks N`: each batch run as calls of similar length, chunk_overhead_tokens N).

{_report.markdown_table([*header, "failed", "other work"], rows)}

"other work": the largest share of the cores that processes other than the server and the load
generator used during a kept run (the machine is shared; a run above {args.max_foreign:.0%} is
repeated, up to {args.attempts} attempts, keeping the least disturbed).

Targets (default configuration: {args.default_label}):

{chr(10).join(verdict) if verdict else "- the default configuration was not measured"}

Commands:

```
bash benchmarks/server/peers/setup.sh
benchmarks/.peers/py/bin/pip install onnxruntime tokenizers
benchmarks/.peers/triton/bin/pip install onnxruntime tokenizers
.venv/bin/python benchmarks/server/bench_embeddings.py {" ".join(sys.argv[1:])}
```
"""
    return md, csv_rows
