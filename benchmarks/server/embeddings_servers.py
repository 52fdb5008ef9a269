"""bench_embeddings.py's servers: accelserve and its peers (Triton, Ray Serve, LitServe) on the
MiniLM files, each started alone, driven with accelserve's load generator and stopped; a run that
other work on the shared cores disturbed is repeated."""

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

from accelserve.tools.bench import BenchSettings, StepResult, run_bench
from accelserve.tools.bench.runner import Progress
from benchmarks.server.peers import launch

ROOT = Path(__file__).resolve().parents[2]
PEERS_SRC = Path(__file__).resolve().parent / "peers"
WORK = launch.PEERS_DIR / "minilm"


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
    return launch.wait_ready(peer, _ready, t0, timeout, poll_s=0.2)


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
