"""accelserve on Ray (front door) vs Ray Serve's best vs standalone: Triton's `simple` and
MiniLM sentence embeddings over HTTP.

    PYTHONPATH=src .venv/bin/python -m benchmarks.server.bench_ray [--repeats 2] [--duration 5] \
        [--models simple,minilm]

Each Ray system runs on a 2-node cluster on this machine (tests/ray_cluster.py: a head and a
worker node, 127.0.0.1, ports and temp dir of its own), one after the other:
`accelserve serve --ray --replicas 2` with its default ingress (HAProxy straight to the
replicas' own HTTP servers, deploy/frontdoor.py), for `simple` also with `--front-door-busy-poll`
(HAProxy polls instead of sleeping); then Ray Serve's best configuration for the
same model (a cluster with Ray's HAProxy and direct ingress, `RAY_SERVE_ENABLE_HA_PROXY=1
RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, and a `@serve.batch` deployment over the same ONNX file:
benchmarks/server/ray_serve_simple.py, ray_serve_minilm.py). The baseline is `accelserve serve`
on the same repository, up throughout. `accelserve.tools.bench` drives each (V2 binary
tensors), alternating which goes first between repeats: `simple` at 1, 16 and 64 connections
on nodes of 2 CPUs; `minilm` (the example pipeline, one sentence per request) at 32
connections on nodes of what one accelserve replica asks for (benchmarks/server/
bench_ray_minilm.py), after checking that the three answer the same embeddings. The tables
give medians over repeats, the ratios, start-to-ready times and replica memory (PSS). Writes
benchmarks/results/bench_ray_systems.csv and docs/PERFORMANCE.md's `server-ray` block. A failed request stops the run with its error.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.server import bench_ray_minilm as minilm  # noqa: E402
from benchmarks.server.bench_ray_report import (  # noqa: E402
    DOOR,
    DOOR_POLL,
    RAYSERVE,
    REPLICA,
    STANDALONE,
    Result,
    Workload,
    report,
)
from tests.ray_cluster import LocalRayCluster, free_port  # noqa: E402

CONCURRENCY = [1, 16, 64]
ACCELSERVE_REPLICA = "ray::ServeReplica:accelserve:accelserve-default"
RAYSERVE_REPLICA = "ray::ServeReplica:rayserve:SimpleOnnx"


# accelserve's command line for each front-door system: the default, and HAProxy busy-polling
DOOR_OPTIONS = {DOOR: [], DOOR_POLL: ["--front-door-busy-poll"]}


REGISTERED = "accelserve replica registered:"  # the line deploy/replica.py logs


def registered_replicas(cluster: LocalRayCluster) -> list[str]:
    """``host:port`` of the accelserve replicas' own HTTP servers, from the line each writes to
    Serve's log when it registers (deploy/replica.py)."""
    found = []
    for log in sorted(Path(cluster.temp_dir).glob("session_*/logs/serve/replica_*.log")):
        text = log.read_text(errors="replace")
        found += re.findall(rf"{REGISTERED} http://(\S+)", text)
    if not found:
        raise RuntimeError(f"no replica registered in Serve's logs under {cluster.temp_dir}")
    return found


def door_ports() -> list[str]:
    return ["--grpc-port", str(free_port()), "--metrics-port", "0"]


def pss_mib(pids: list[int]) -> float:
    """Proportional set size of these processes, MiB (shared pages split between sharers)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in text.splitlines() if line.startswith("Pss:"))
    return total / 1024


def simple_repository(root: Path, instances: int = 1) -> Path:
    """The example ``simple`` under ``root``/models, with ``instances`` CPU instances."""
    from accelserve.tools.examples.build import BUILDERS

    target = root / "models" / "simple"
    target.mkdir(parents=True)
    config = (ROOT / "examples" / "model_repository" / "simple" / "config.pbtxt").read_text()
    config, found = re.subn(r"count: 1\b", f"count: {instances}", config)
    if found != 1:
        raise RuntimeError("examples/model_repository/simple/config.pbtxt: no 'count: 1' found")
    (target / "config.pbtxt").write_text(config)
    BUILDERS["simple"](target)
    return target.parent


def start(
    args: list[str], port: int, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen, float]:
    command = [sys.executable, "-m", "accelserve.cli", "serve", *args, "--http-port", str(port)]
    return launch(command, f"http://127.0.0.1:{port}/v2/health/ready", env, log)


def launch(
    command: list[str], ready_url: str, env: dict[str, str], log: Path, marker: str = ""
) -> tuple[subprocess.Popen, float]:
    """Start ``command``; it and the seconds until ``ready_url`` answers 200 and its output
    shows ``marker``."""
    began = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    while time.monotonic() - began < 300:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(ready_url, timeout=2):
                if marker in log.read_text(errors="replace"):
                    return process, time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not ready:\n{log.read_text()[-3000:]}")


def simple_workload(work: Path) -> Workload:
    repository = simple_repository(work)

    def peer(address: str, port: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "benchmarks.server.ray_serve_simple",
            *("--address", address, "--port", str(port)),
            *("--model-dir", str(repository / "simple"), "--replicas", "2"),
            *("--metadata", str(work / "simple_metadata.json")),
            *("--config", str(work / "simple_config.json")),
        ]

    workload = Workload("simple", CONCURRENCY, repository, 2, peer, RAYSERVE_REPLICA)
    workload.systems = (DOOR, DOOR_POLL, RAYSERVE)  # latency at 1 connection: both doors
    return workload


def minilm_workload(work: Path) -> Workload:
    repository = minilm.repository(work)
    cpus = minilm.node_cpus(repository)

    def peer(address: str, port: int) -> list[str]:
        return minilm.peer_command(address, port, repository, work, cpus)

    return Workload(
        "minilm",
        minilm.CONNECTIONS,
        repository,
        cpus,
        peer,
        minilm.REPLICA_TITLE,
        minilm.bench_options(work),
        minilm.check_answers,
    )


WORKLOADS = {"simple": simple_workload, "minilm": minilm_workload}


def bench(url: str, workload: Workload, duration: float) -> Result:
    """{connections: (req/s, p50 ms, p99 ms)}; raises if any request failed."""
    from accelserve.tools.bench.bench import BenchSettings, run_bench
    from accelserve.tools.bench.runner import Progress

    settings = BenchSettings(
        url=url,
        model=workload.model,
        concurrency=workload.levels,
        duration_s=duration,
        warmup_s=1.0,
        server_stats=False,  # the same requests to every server (Ray Serve's has no stats)
    )
    settings = dataclasses.replace(settings, **workload.options)
    outcome = run_bench(settings, Progress(sys.stderr))
    result = {}
    for step in outcome.steps:
        if step.failed or not step.ok:
            raise RuntimeError(
                f"{url} {workload.model}: {step.failed} failed requests (of {step.ok + step.failed}) "
                f"at {step.level:g}: {step.errors}"
            )
        latency = step.latency
        result[int(step.level)] = (step.throughput, latency.p50 * 1e3, latency.p99 * 1e3)
    if sorted(result) != sorted(workload.levels):
        raise RuntimeError(f"{url} {workload.model}: levels {sorted(result)} measured")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--models", default="simple,minilm", help="steps to run, in this order")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in WORKLOADS]
    if unknown or not models:
        parser.error(f"--models: expected some of {', '.join(WORKLOADS)}; received {args.models!r}")
    work = Path(tempfile.mkdtemp(prefix="bench_ray"))
    workloads = [WORKLOADS[m](work) for m in models]
    # The repository root too: Ray Serve's MiniLM replicas import benchmarks.server.
    path = os.pathsep.join(
        filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")])
    )
    env = {**os.environ, "PYTHONPATH": path}
    load = [os.getloadavg()[0]]
    for workload in workloads:
        measure(workload, work, env, args.repeats, args.duration, load)
    report(workloads, load, args, write_docs=sorted(models) == sorted(WORKLOADS))


def measure(
    workload: Workload,
    work: Path,
    env: dict[str, str],
    repeats: int,
    duration: float,
    load: list[float],
) -> None:
    """The standalone server up throughout; each Ray system on a cluster of its own beside it."""
    model = workload.model
    common = ["--model-repository", str(workload.repository), "--device", "cpu"]
    port = free_port()
    alone, workload.ready[STANDALONE] = start(
        [*common, "--grpc-port", "0", "--metrics-port", "0"], port, env, work / f"{model}.log"
    )
    for name in ("metadata", "config"):  # what the Ray Serve baseline replays
        suffix = "/config" if name == "config" else ""
        url = f"http://127.0.0.1:{port}/v2/models/{model}{suffix}"
        with urllib.request.urlopen(url) as answer:
            (work / f"{model}_{name}.json").write_bytes(answer.read())
    workload.runs[STANDALONE] = []
    try:
        for system in workload.systems:  # one cluster after the other, the baseline up throughout
            cpus = workload.node_cpus
            cluster = LocalRayCluster(
                head_cpus=cpus,
                worker_cpus=cpus,
                env={"PYTHONPATH": env["PYTHONPATH"]},
                haproxy=system == RAYSERVE,
            )
            server = None
            try:
                cluster.add_worker()
                server_port = free_port()
                cluster_env = {**cluster.env, "PYTHONPATH": env["PYTHONPATH"]}
                log = work / f"{model}_{system}.log"
                if system in DOOR_OPTIONS:
                    server, workload.ready[system] = start(
                        [*common, "--ray", cluster.address, "--replicas", "2", *door_ports()]
                        + DOOR_OPTIONS[system],
                        server_port,
                        cluster_env,
                        log,
                    )
                    replicas = cluster.processes(ACCELSERVE_REPLICA)
                else:
                    command = workload.peer(cluster.address, server_port)
                    ready_url = f"http://127.0.0.1:{server_port}/v2/models/{model}"
                    # Ready: serve.run returned (every replica up), as for accelserve.
                    marker = "ray serve app running"
                    server, workload.ready[system] = launch(
                        command, ready_url, cluster_env, log, marker
                    )
                    replicas = cluster.processes(workload.peer_title)
                workload.memory[system] = (
                    f"{len(replicas)} replicas {pss_mib(replicas):,.0f} MiB + HAProxy "
                    f"{pss_mib(cluster.processes('', name='haproxy')):,.0f} MiB"
                )
                urls = {system: f"127.0.0.1:{server_port}", STANDALONE: f"127.0.0.1:{port}"}
                if system == DOOR and workload.model == "simple":  # where the hop's cost goes
                    urls[REPLICA] = registered_replicas(cluster)[0]
                if workload.check is not None:
                    worst = workload.check(urls, STANDALONE)
                    workload.agreement[system] = worst[system]
                for name in urls:
                    workload.runs.setdefault(name, [])
                for repeat in range(repeats):
                    order = list(urls) if repeat % 2 == 0 else list(reversed(urls))
                    for name in order:
                        print(f"[bench_ray] {model} {name}, repeat {repeat + 1}", file=sys.stderr)
                        workload.runs[name].append(bench(urls[name], workload, duration))
                load.append(os.getloadavg()[0])
            finally:
                if server is not None:
                    stop(server)
                cluster.stop()
    finally:
        stop(alone)
    workload.memory[STANDALONE] = "n/a (one process)"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


if __name__ == "__main__":
    main()
