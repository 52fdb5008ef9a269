"""Triton's `simple` over HTTP: accelserve on Ray (front door) vs Ray Serve's best vs standalone.

    PYTHONPATH=src .venv/bin/python -m benchmarks.server.bench_ray [--repeats 2] [--duration 5]

Each Ray system runs on a 2-node cluster on this machine (tests/ray_cluster.py: a head and a
worker node, two CPUs each, 127.0.0.1, ports and temp dir of its own), one after the other:
`accelserve serve --ray --replicas 2` with its default ingress (HAProxy straight to the
replicas' own HTTP servers, deploy/frontdoor.py); then Ray Serve's best configuration for the
same model (a cluster with Ray's HAProxy and direct ingress, `RAY_SERVE_ENABLE_HA_PROXY=1
RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, and a `@serve.batch` deployment over the same ONNX file:
benchmarks/server/ray_serve_simple.py). The baseline is `accelserve serve` on the same
repository, up throughout. `accelserve.tools.bench` drives each at 1, 16 and 64 connections
(V2 binary tensors), alternating which goes first between repeats; the table gives medians over
repeats, the ratios, start-to-ready times and replica memory (PSS). Writes
benchmarks/results/bench_ray_frontdoor.csv and docs/PERFORMANCE.md's `server-ray` block.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _report  # noqa: E402
from tests.ray_cluster import LocalRayCluster, free_port  # noqa: E402

CONCURRENCY = [1, 16, 64]
DOOR, RAYSERVE, STANDALONE = "door", "rayserve", "standalone"
LABELS = {
    DOOR: "accelserve on Ray (front door)",
    RAYSERVE: "Ray Serve best",
    STANDALONE: "standalone",
}
ACCELSERVE_REPLICA = "ray::ServeReplica:accelserve:accelserve-default"
RAYSERVE_REPLICA = "ray::ServeReplica:rayserve:SimpleOnnx"


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


def haproxy_pids(cluster: LocalRayCluster) -> list[int]:
    """This cluster's HAProxy processes (ours or Ray's: both inherit the cluster's env)."""
    marker = f"ACCELSERVE_TEST_RAY={cluster.temp_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "haproxy":
                continue
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def simple_repository(root: Path) -> Path:
    from accelserve.tools.examples.build import BUILDERS

    target = root / "models" / "simple"
    target.mkdir(parents=True)
    config = ROOT / "examples" / "model_repository" / "simple" / "config.pbtxt"
    (target / "config.pbtxt").write_text(config.read_text())
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


Result = dict[int, tuple[float, float, float]]


def bench(url: str, duration: float) -> Result:
    """{connections: (req/s, p50 ms, p99 ms)}"""
    from accelserve.tools.bench.bench import BenchSettings, run_bench
    from accelserve.tools.bench.runner import Progress

    settings = BenchSettings(
        url=url,
        model="simple",
        concurrency=CONCURRENCY,
        duration_s=duration,
        warmup_s=1.0,
        server_stats=False,  # the same requests to every server (Ray Serve's has no stats)
    )
    outcome = run_bench(settings, Progress(sys.stderr))
    result = {}
    for step in outcome.steps:
        if step.failed:
            raise RuntimeError(f"{step.failed} failed requests at {step.level:g}: {step.errors}")
        latency = step.latency
        result[int(step.level)] = (step.throughput, latency.p50 * 1e3, latency.p99 * 1e3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_ray"))
    repository = simple_repository(work)
    common = ["--model-repository", str(repository), "--device", "cpu"]
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    port = free_port()
    alone, alone_ready = start(
        [*common, "--grpc-port", "0", "--metrics-port", "0"], port, env, work / "alone.log"
    )
    for name in ("metadata", "config"):  # what the Ray Serve baseline replays
        suffix = "/config" if name == "config" else ""
        url = f"http://127.0.0.1:{port}/v2/models/simple{suffix}"
        with urllib.request.urlopen(url) as answer:
            (work / f"{name}.json").write_bytes(answer.read())
    runs: dict[str, list[Result]] = {STANDALONE: []}
    ready = {STANDALONE: alone_ready}
    memory: dict[str, str] = {}
    load = [os.getloadavg()[0]]
    try:
        for system in (DOOR, RAYSERVE):  # one cluster after the other, the baseline up throughout
            cluster = LocalRayCluster(head_cpus=2, worker_cpus=2, haproxy=system == RAYSERVE)
            server = None
            try:
                cluster.add_worker()
                server_port = free_port()
                cluster_env = {**cluster.env, "PYTHONPATH": path}
                log = work / f"{system}.log"
                if system == DOOR:
                    server, ready[system] = start(
                        [*common, "--ray", cluster.address, "--replicas", "2", *door_ports()],
                        server_port,
                        cluster_env,
                        log,
                    )
                    replicas = cluster.processes(ACCELSERVE_REPLICA)
                else:
                    command = [
                        sys.executable,
                        "-m",
                        "benchmarks.server.ray_serve_simple",
                        *("--address", cluster.address, "--port", str(server_port)),
                        *("--model-dir", str(repository / "simple"), "--replicas", "2"),
                        *("--metadata", str(work / "metadata.json")),
                        *("--config", str(work / "config.json")),
                    ]
                    ready_url = f"http://127.0.0.1:{server_port}/v2/models/simple"
                    # Ready: serve.run returned (every replica up), as for accelserve.
                    marker = "ray serve app running"
                    server, ready[system] = launch(command, ready_url, cluster_env, log, marker)
                    replicas = cluster.processes(RAYSERVE_REPLICA)
                memory[system] = (
                    f"{len(replicas)} replicas {pss_mib(replicas):,.0f} MiB + HAProxy "
                    f"{pss_mib(haproxy_pids(cluster)):,.0f} MiB"
                )
                urls = {system: f"127.0.0.1:{server_port}", STANDALONE: f"127.0.0.1:{port}"}
                runs.setdefault(system, [])
                for repeat in range(args.repeats):
                    order = list(urls) if repeat % 2 == 0 else list(reversed(urls))
                    for name in order:
                        print(f"[bench_ray] {name}, repeat {repeat + 1}", file=sys.stderr)
                        runs[name].append(bench(urls[name], args.duration))
                load.append(os.getloadavg()[0])
            finally:
                if server is not None:
                    stop(server)
                cluster.stop()
    finally:
        stop(alone)
    memory[STANDALONE] = "n/a (one process)"
    report(runs, ready, memory, load, args)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def report(
    runs: dict[str, list[Result]],
    ready: dict[str, float],
    memory: dict[str, str],
    load: list[float],
    args: argparse.Namespace,
) -> None:
    def med(name: str, level: int, index: int) -> float:
        return statistics.median(r[level][index] for r in runs[name])

    names = [DOOR, RAYSERVE, STANDALONE]
    rows, csv_rows = [], []
    for level in CONCURRENCY:
        value = {n: tuple(med(n, level, i) for i in range(3)) for n in names}
        rps = {n: value[n][0] for n in names}
        rows.append(
            [level]
            + [f"{rps[n]:,.0f} / {value[n][1]:.2f} / {value[n][2]:.2f}" for n in names]
            + [f"{rps[DOOR] / rps[STANDALONE]:.2f}x", f"{rps[DOOR] / rps[RAYSERVE]:.2f}x"]
        )
        row: dict[str, object] = {
            "date": _report.today(),
            "commit": _report.commit(),
            "machine": _report.machine(),
            "connections": level,
        }
        for name in names:
            row[f"{name}_rps"] = round(rps[name], 1)
            row[f"{name}_p50_ms"] = round(value[name][1], 3)
            row[f"{name}_p99_ms"] = round(value[name][2], 3)
        csv_rows.append(row)
    _report.append_csv(_report.result_path("bench_ray_frontdoor.csv"), csv_rows)
    header = ["connections"] + [f"{LABELS[n]} req/s / p50 / p99 ms" for n in names]
    header += ["front door / standalone", "front door / Ray Serve"]
    table = _report.markdown_table(header, rows)

    def rate(name: str, level: int) -> float:
        return med(name, level, 0)

    worst = min(rate(DOOR, n) / rate(STANDALONE, n) for n in CONCURRENCY)
    over_ray = min(rate(DOOR, n) / rate(RAYSERVE, n) for n in CONCURRENCY if n > 1)
    p50 = med(DOOR, 1, 1)
    targets = (
        f"Targets (issue 12): >= 0.8x standalone at every level: "
        f"{'met' if worst >= 0.8 else 'not met'} (lowest {worst:.2f}x); p50 at 1 connection "
        f"<= 0.3 ms: {'met' if p50 <= 0.3 else 'not met'} ({p50:.2f} ms); >= 2x Ray Serve at 16 "
        f"and 64: {'met' if over_ray >= 2 else 'not met'} (lowest {over_ray:.2f}x)."
    )
    loads = ", ".join(f"{x:.1f}" for x in load)
    text = f"""### accelserve on Ray (front door) vs Ray Serve's best vs standalone (`simple`, HTTP binary)

{_report.today()}, commit {_report.commit()}, {_report.machine()}; medians of {args.repeats} repeats
of {args.duration:g} s per level, `accelserve.tools.bench` (HTTP/1.1 keep-alive, V2 binary
tensors). Each Ray system runs on its own 2-node cluster on this machine (2 CPUs each, 2
replicas of 1 CPU). "{LABELS[DOOR]}": `accelserve serve --ray ... --replicas 2` with its
default ingress: HAProxy (deploy/frontdoor.py) straight to the replicas' own accelserve HTTP
servers. "{LABELS[RAYSERVE]}": the cluster started with `RAY_SERVE_ENABLE_HA_PROXY=1
RAY_SERVE_THROUGHPUT_OPTIMIZED=1` (Ray's HAProxy, direct ingress), a Serve deployment over the
same ONNX file with onnxruntime and `@serve.batch` (max 8, no wait), decoding the same V2
binary requests (benchmarks/server/ray_serve_simple.py). The standalone `accelserve serve` is
up throughout and measured beside each, alternating which goes first. Start to ready (cluster
already up): {", ".join(f"{LABELS[n]} {ready[n]:.1f} s" for n in ready)}. Memory (PSS after
start): {"; ".join(f"{LABELS[n]}: {memory[n]}" for n in memory)}. Everything (both nodes,
the servers and the load generator) shares this machine's cores (load average {loads} at the
start and after each cluster).

{table}

{targets}

`{_report.command_line()}`
"""
    _report.write_section("server-ray", text)
    print(text)


if __name__ == "__main__":
    main()
