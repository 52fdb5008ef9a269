"""Triton's `simple` over HTTP: accelserve on a 2-node Ray cluster vs accelserve standalone.

    PYTHONPATH=src .venv/bin/python -m benchmarks.server.bench_ray [--repeats 2] [--duration 5]

The cluster runs on this machine (tests/ray_cluster.py: a head and a worker node, two CPUs
each, 127.0.0.1, ports and temp dir of its own). `accelserve serve --ray` deploys the
repository with `--replicas 2` (one replica per node); requests go through Ray Serve's default
HTTP proxy to a replica (docs/distributed.md), or straight to one replica's own HTTP server
(the one it serves statistics on). The baseline is `accelserve serve` on the same repository,
up at the same time. `accelserve.tools.bench`
drives each at 1 and 16 connections (V2 binary tensors), alternating which goes first between
repeats; the table gives medians over repeats and the ratio Ray / standalone. Writes
benchmarks/results/bench_ray.csv and docs/PERFORMANCE.md's `server-ray` block.
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

CONCURRENCY = [1, 16]
RAY, DIRECT, STANDALONE = "ray", "replica", "standalone"


def replica_url(cluster: LocalRayCluster, env: dict[str, str]) -> str:
    """One replica's own HTTP server (deploy/peers.py's registry)."""
    code = (
        f"import ray; ray.init(address={cluster.address!r}, logging_level='error');"
        "r = ray.get_actor('accelserve-peers', namespace='accelserve');"
        "print(ray.get(r.urls.remote(['accelserve/accelserve-default']))[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return result.stdout.strip().splitlines()[-1].removeprefix("http://")


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
    began = time.monotonic()
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    while time.monotonic() - began < 300:
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2):
                return process, time.monotonic() - began
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server not ready:\n{log.read_text()[-3000:]}")


def bench(url: str, duration: float) -> dict[int, tuple[float, float]]:
    """{connections: (req/s, p50 ms)}"""
    from accelserve.tools.bench.bench import BenchSettings, run_bench
    from accelserve.tools.bench.runner import Progress

    settings = BenchSettings(
        url=url,
        model="simple",
        concurrency=CONCURRENCY,
        duration_s=duration,
        warmup_s=1.0,
    )
    outcome = run_bench(settings, Progress(sys.stderr))
    result = {}
    for step in outcome.steps:
        if step.failed:
            raise RuntimeError(f"{step.failed} failed requests at {step.level:g}: {step.errors}")
        result[int(step.level)] = (step.throughput, float(step.latency.p50) * 1e3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_ray"))
    repository = simple_repository(work)
    cluster = LocalRayCluster(head_cpus=2, worker_cpus=2)
    processes: list[subprocess.Popen] = []
    try:
        cluster.add_worker()
        env = {
            **cluster.env,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
            ),
        }
        ports = {RAY: free_port(), STANDALONE: free_port()}
        common = ["--model-repository", str(repository), "--device", "cpu"]
        ray, ray_ready = start(
            [*common, "--ray", cluster.address, "--replicas", "2"],
            ports[RAY],
            env,
            work / "ray.log",
        )
        processes.append(ray)
        alone, alone_ready = start(
            [*common, "--grpc-port", "0", "--metrics-port", "0"],
            ports[STANDALONE],
            env,
            work / "alone.log",
        )
        processes.append(alone)
        urls = {
            RAY: f"127.0.0.1:{ports[RAY]}",
            DIRECT: replica_url(cluster, env),
            STANDALONE: f"127.0.0.1:{ports[STANDALONE]}",
        }
        runs: dict[str, list[dict[int, tuple[float, float]]]] = {n: [] for n in urls}
        for repeat in range(args.repeats):
            order = list(urls) if repeat % 2 == 0 else list(reversed(urls))
            for name in order:
                print(f"[bench_ray] {name}, repeat {repeat + 1}", file=sys.stderr, flush=True)
                runs[name].append(bench(urls[name], args.duration))
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        cluster.stop()
    report(runs, {RAY: ray_ready, STANDALONE: alone_ready}, args)


def report(
    runs: dict[str, list[dict[int, tuple[float, float]]]],
    ready: dict[str, float],
    args: argparse.Namespace,
) -> None:
    def med(name: str, level: int, index: int) -> float:
        return statistics.median(r[level][index] for r in runs[name])

    rows, csv_rows = [], []
    for level in CONCURRENCY:
        rps = {name: med(name, level, 0) for name in runs}
        p50 = {name: med(name, level, 1) for name in runs}
        rows.append(
            [level]
            + [f"{rps[n]:,.0f} / {p50[n]:.2f}" for n in (RAY, DIRECT, STANDALONE)]
            + [f"{rps[RAY] / rps[STANDALONE]:.3f}x", f"{rps[DIRECT] / rps[STANDALONE]:.2f}x"]
        )
        row: dict[str, object] = {
            "date": _report.today(),
            "commit": _report.commit(),
            "machine": _report.machine(),
            "connections": level,
        }
        for name in (RAY, DIRECT, STANDALONE):
            row[f"{name}_rps"] = round(rps[name], 1)
            row[f"{name}_p50_ms"] = round(p50[name], 3)
        csv_rows.append(row)
    _report.append_csv(_report.result_path("bench_ray.csv"), csv_rows)
    table = _report.markdown_table(
        [
            "connections",
            "Ray proxy req/s / p50 ms",
            "one replica direct",
            "standalone",
            "Ray proxy / standalone",
            "direct / standalone",
        ],
        rows,
    )
    text = f"""### accelserve on Ray Serve vs standalone (`simple`, HTTP binary)

{_report.today()}, commit {_report.commit()}, {_report.machine()}; medians of {args.repeats} repeats of
{args.duration:g} s per level. Ray: a 2-node cluster on this machine (2 CPUs each), 2 replicas, Ray
Serve's default HTTP proxy in front of the group's deployment ("Ray proxy"), and the same cluster
with the load sent straight to one replica's own accelserve HTTP server ("one replica direct", the
server each replica runs for summed statistics; no Ray on the request path). Ray ready in
{ready[RAY]:.1f} s after the command (cluster already up) vs {ready[STANDALONE]:.1f} s standalone.
Everything (both nodes, both servers, the load generator) shares this machine's cores, with
other work running (load average {os.getloadavg()[0]:.1f} at the end).

{table}

`{_report.command_line()}`
"""
    _report.write_section("server-ray", text)
    print(text)


if __name__ == "__main__":
    main()
