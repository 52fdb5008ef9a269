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
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from accelserve.tools.bench import BenchSettings, StepResult, run_bench  # noqa: E402
from accelserve.tools.bench.runner import Progress  # noqa: E402
from accelserve.tools.export.sentence_transformer import ExportOptions  # noqa: E402
from benchmarks import _report  # noqa: E402
from benchmarks.server.peers import launch  # noqa: E402

HERE = Path(__file__).resolve().parent
PEERS_SRC = HERE / "peers"
WORK = launch.PEERS_DIR / "minilm"
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


# -- offline -----------------------------------------------------------------------------------


@dataclass
class Offline:
    rate: dict[int, list[float]] = field(default_factory=dict)  # batch -> sentences/s per repeat
    batch32_s: list[float] = field(default_factory=list)
    head_ms: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    def best(self) -> tuple[int, float]:
        medians = {b: statistics.median(v) for b, v in self.rate.items()}
        batch = max(medians, key=lambda b: medians[b])
        return batch, medians[batch]


def _session(path: Path, threads: int) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def offline(kernel: Path, onnx: Path, texts: list[str], args: argparse.Namespace) -> Offline:
    """The ceiling (kernel pipeline's files, pooled by the fastest head) and the head timing."""
    from tokenizers import Tokenizer

    from accelserve import kernels

    result = Offline()
    tokenizer = Tokenizer.from_file(str(kernel / "minilm_tokenizer/1/tokenizer.json"))
    hidden = _session(kernel / "minilm_transformer/1/model.onnx", args.threads)
    pooled = _session(onnx / "minilm_transformer/1/model.onnx", args.threads)

    def encode(batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        return ids, np.array([e.attention_mask for e in enc], dtype=np.int64)

    def kernel_head(batch: list[str]) -> np.ndarray:
        ids, mask = encode(batch)
        (h,) = hidden.run(["token_embeddings"], {"input_ids": ids, "attention_mask": mask})  # type: ignore[attr-defined]
        return kernels.masked_mean_pool_l2(h, mask)

    def onnx_head(batch: list[str]) -> np.ndarray:
        ids, mask = encode(batch)
        (e,) = pooled.run(["embedding"], {"input_ids": ids, "attention_mask": mask})  # type: ignore[attr-defined]
        return e

    heads = {"kernel": kernel_head, "onnx": onnx_head}
    for fn in heads.values():
        fn(texts[:8])  # warm up (kernel compile, ORT allocations)
    # Head: the same batches through both pipelines, alternating, per batch size.
    for size in (8, 32):
        batches = [texts[i : i + size] for i in range(0, args.offline_sentences, size)]
        for name in heads:
            result.head_ms.setdefault(name, {})[size] = []
        for _ in range(args.repeats):
            for name, fn in heads.items():
                t0 = time.perf_counter()
                for batch in batches:
                    fn(batch)
                ms = (time.perf_counter() - t0) / len(batches) * 1e3
                result.head_ms[name][size].append(ms)
    faster = min(heads, key=lambda n: statistics.median(result.head_ms[n][32]))
    run = heads[faster]
    print(f"[bench] offline head: {faster} is faster; ceiling uses it", file=sys.stderr)
    for _ in range(args.repeats):
        for size in (1, 4, 8, 16, 32, 64):
            count = min(args.offline_sentences, 64 if size == 1 else args.offline_sentences)
            t0 = time.perf_counter()
            for i in range(0, count, size):
                run(texts[i : i + size])
            result.rate.setdefault(size, []).append(count / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for i in range(0, 8 * 32, 32):
            run(texts[i : i + 32])
        result.batch32_s.append((time.perf_counter() - t0) / 8)
    return result


# -- servers -----------------------------------------------------------------------------------


@dataclass
class Server:
    name: str  # row label
    kind: str  # accelserve | triton | ray | litserve
    repo: Path
    wire: str  # binary | json
    instances: int = 1  # peers: Triton instances, Ray replicas, LitServe workers
    threads: int = 0  # peers: ONNX Runtime intra-op threads (accelserve: in its config)
    steps: list[StepResult] = field(default_factory=list)
    ready_s: list[float] = field(default_factory=list)
    busy_before: list[float] = field(default_factory=list)  # other work on the cores at start
    skipped: str = ""

    def med(self, attr: str) -> float:
        values = [
            s.throughput if attr == "rate" else float(getattr(s.latency, attr)) * 1e3
            for s in self.steps
        ]
        return statistics.median(values) if values else math.nan


def _command(server: Server, port: int, grpc_port: int) -> tuple[list[str], dict]:
    env = dict(
        os.environ,
        MINILM_DIR=str(server.repo),
        MINILM_THREADS=str(server.threads),
        MINILM_INSTANCES=str(server.instances),
    )
    env["PYTHONPATH"] = str(PEERS_SRC)
    if server.kind == "accelserve":
        exe = ROOT / ".venv" / "bin" / "accelserve"
        cmd = [str(exe), "serve", "--model-repository", str(server.repo), "--http-port", str(port)]
        return [*cmd, "--grpc-port", "0", "--metrics-port", "0", "--log-level", "warning"], env
    if server.kind == "triton":
        cmd, triton_env = launch._triton_command(port, grpc_port)
        repo = WORK / "triton_repo"
        import shutil

        shutil.rmtree(repo, ignore_errors=True)
        shutil.copytree(PEERS_SRC / "triton_repo_minilm", repo)
        params = {
            "EXECUTION_ENV_PATH": str(launch.PEERS_DIR / "triton"),
            "PEERS_SRC": str(PEERS_SRC),
            "MINILM_DIR": str(server.repo),
            "MINILM_THREADS": str(server.threads),
        }
        config = repo / "minilm" / "config.pbtxt"
        text = "".join(
            f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n'
            for k, v in params.items()
        )
        count = f"count: {server.instances} kind"
        config.write_text(config.read_text().replace("count: 1 kind", count) + text)
        cmd = [
            f"--model-repository={repo}" if c.startswith("--model-repository=") else c for c in cmd
        ]
        return cmd, {**triton_env, **{k: env[k] for k in ("MINILM_DIR", "MINILM_THREADS")}}
    python = launch.PEERS_DIR / "py" / "bin" / "python"
    if not python.exists():
        raise launch.PeerError(f"{python} not found: run benchmarks/server/peers/setup.sh")
    script = {"ray": "ray_serve_minilm.py", "litserve": "litserve_minilm.py"}[server.kind]
    return [str(python), str(PEERS_SRC / script), "--port", str(port)], env


def _ready(port: int) -> bool:
    body = json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["hello"]}]}
    ).encode()
    outputs = launch.infer_outputs(port, "minilm", body)
    if outputs is None:
        return False
    return any(o.get("name") == "embedding" and len(o.get("data", [])) == 384 for o in outputs)


def start(server: Server, timeout: float) -> launch.RunningPeer:
    port, grpc_port = launch.free_port(), launch.free_port()
    cmd, env = _command(server, port, grpc_port)
    launch.LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = launch.LOG_DIR / f"minilm-{server.name.replace(' ', '_')}.log"
    import subprocess

    t0 = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PEERS_SRC,
            start_new_session=True,
        )
    peer = launch.RunningPeer(
        server.kind, server.name, server.wire, proc, port, grpc_port, log_path
    )
    try:
        while time.perf_counter() - t0 < timeout:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
                raise launch.PeerError(f"exited with {proc.returncode}: {tail[0][:200]}")
            if _ready(port):
                peer.ready_s = time.perf_counter() - t0
                peer.processes()
                return peer
            peer.processes()
            time.sleep(0.2)
    except BaseException:
        peer.stop()
        raise
    peer.stop()
    raise launch.PeerError(f"not ready after {timeout:.0f} s (log: {log_path})")


def _busy_fraction(seconds: float = 1.0) -> float:
    """Share of all cores busy over ``seconds`` (from /proc/stat; 0 where unavailable)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """On a shared machine, wait (up to ``limit_s``) until other work leaves the cores idle;
    returns the busy fraction seen last, which the report prints."""
    deadline = time.monotonic() + limit_s
    busy = _busy_fraction()
    while busy > threshold and time.monotonic() < deadline:
        busy = _busy_fraction(2.0)
    return busy


def _cpu_seconds(procs: list) -> float:
    total = 0.0
    for p in procs:
        try:
            times = p.cpu_times()
        except Exception:  # the process ended meanwhile
            continue
        total += times.user + times.system
    return total


def _machine_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, wall seconds x cores) so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    busy = sum(values) - values[3] - values[4]
    return busy / tick, sum(values) / tick


def measure(server: Server, data_file: Path, args: argparse.Namespace) -> None:
    """One measured run; retried (up to --attempts) when other work took more than
    --max-foreign of the cores during it, keeping the least disturbed attempt."""
    import psutil

    best: tuple[float, StepResult] | None = None
    for attempt in range(args.attempts):
        busy = wait_for_quiet(args.quiet_wait)
        print(
            f"[bench] {server.name}, attempt {attempt + 1} (cores {busy:.0%} busy before)",
            file=sys.stderr,
            flush=True,
        )
        try:
            peer = start(server, args.ready_timeout)
        except launch.PeerError as exc:
            server.skipped = str(exc)[:300]
            print(f"[bench] SKIPPING {server.name}: {exc}", file=sys.stderr, flush=True)
            return
        try:
            if attempt == 0:
                server.ready_s.append(peer.ready_s)
            settings = BenchSettings(
                url=peer.url,
                model="minilm",
                protocol="http",
                http_format=server.wire,
                concurrency=[args.concurrency],
                duration_s=args.duration,
                warmup_s=args.warmup,
                input_data=str(data_file),
                shapes={"text": [1]},  # accelserve's text input is optional (ids may replace it)
                timeout_s=60.0,
            )
            ours = [psutil.Process(), *peer.processes()]
            mine0, (busy0, total0) = _cpu_seconds(ours), _machine_busy_seconds()
            outcome = run_bench(settings, Progress(sys.stderr))
            ours = [psutil.Process(), *peer.processes()]
            mine1, (busy1, total1) = _cpu_seconds(ours), _machine_busy_seconds()
        except Exception as exc:  # one broken server must not lose the others' numbers
            server.skipped = f"failed during the run: {exc}"[:300]
            print(f"[bench] {server.name} failed: {exc}", file=sys.stderr, flush=True)
            return
        finally:
            peer.stop()
        foreign = max(0.0, (busy1 - busy0) - (mine1 - mine0)) / max(1e-9, total1 - total0)
        print(f"[bench] other work used {foreign:.0%} of the cores", file=sys.stderr, flush=True)
        if best is None or foreign < best[0]:
            best = (foreign, outcome.steps[0])
        if foreign <= args.max_foreign:
            break
    assert best is not None
    server.busy_before.append(best[0])
    server.steps.append(best[1])


# -- report ------------------------------------------------------------------------------------


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
    rows, csv_rows = [], []
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
