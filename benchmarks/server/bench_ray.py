"""Triton's `simple` over HTTP: accelserve on a 2-node Ray cluster vs accelserve standalone.

    PYTHONPATH=src .venv/bin/python -m benchmarks.server.bench_ray [--repeats 2] [--duration 5]

The cluster runs on this machine (tests/ray_cluster.py: a head and a worker node, two CPUs
each, 127.0.0.1, ports and temp dir of its own). `accelserve serve --ray` deploys the
repository with `--replicas 2` (one replica per node); requests go through Ray Serve's default
HTTP proxy and accelserve's router deployment to a replica (docs/distributed.md), or straight to one replica's own HTTP server
(the one it serves statistics on); then a second cluster with Ray's HAProxy and direct ingress
(`RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_THROUGHPUT_OPTIMIZED=1`). The baseline is `accelserve
serve` on the same repository, up throughout. `accelserve.tools.bench`
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
RAY, HAPROXY, DIRECT, STANDALONE = "ray", "haproxy", "replica", "standalone"
LABELS = {
    RAY: "Ray proxy",
    HAPROXY: "Ray HAProxy + direct ingress",
    DIRECT: "one replica direct",
    STANDALONE: "standalone",
}


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
    common = ["--model-repository", str(repository), "--device", "cpu"]
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    port = free_port()
    alone, alone_ready = start(
        [*common, "--grpc-port", "0", "--metrics-port", "0"], port, env, work / "alone.log"
    )
    runs: dict[str, list[dict[int, tuple[float, float]]]] = {STANDALONE: []}
    ready = {STANDALONE: alone_ready}
    try:
        for ingress in (RAY, HAPROXY):  # one cluster after the other, the baseline up throughout
            cluster = LocalRayCluster(head_cpus=2, worker_cpus=2, haproxy=ingress == HAPROXY)
            ray = None
            try:
                cluster.add_worker()
                ray_port = free_port()
                ray, ready[ingress] = start(
                    [*common, "--ray", cluster.address, "--replicas", "2"],
                    ray_port,
                    {**cluster.env, "PYTHONPATH": path},
                    work / f"{ingress}.log",
                )
                urls = {ingress: f"127.0.0.1:{ray_port}", STANDALONE: f"127.0.0.1:{port}"}
                if ingress == RAY:
                    urls[DIRECT] = replica_url(cluster, {**cluster.env, "PYTHONPATH": path})
                for name in urls:
                    runs.setdefault(name, [])
                for repeat in range(args.repeats):
                    order = list(urls) if repeat % 2 == 0 else list(reversed(urls))
                    for name in order:
                        print(
                            f"[bench_ray] {name}, repeat {repeat + 1}", file=sys.stderr, flush=True
                        )
                        runs[name].append(bench(urls[name], args.duration))
            finally:
                if ray is not None:
                    stop(ray)
                cluster.stop()
    finally:
        stop(alone)
    report(runs, ready, args)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def report(
    runs: dict[str, list[dict[int, tuple[float, float]]]],
    ready: dict[str, float],
    args: argparse.Namespace,
) -> None:
    def med(name: str, level: int, index: int) -> float:
        return statistics.median(r[level][index] for r in runs[name])

    names = [n for n in (RAY, HAPROXY, DIRECT, STANDALONE) if runs.get(n)]
    rows, csv_rows = [], []
    for level in CONCURRENCY:
        rps = {name: med(name, level, 0) for name in names}
        p50 = {name: med(name, level, 1) for name in names}
        rows.append(
            [level]
            + [f"{rps[n]:,.0f} / {p50[n]:.2f}" for n in names]
            + [f"{rps[n] / rps[STANDALONE]:.3f}x" for n in names if n != STANDALONE]
        )
        row: dict[str, object] = {
            "date": _report.today(),
            "commit": _report.commit(),
            "machine": _report.machine(),
            "connections": level,
        }
        for name in names:
            row[f"{name}_rps"] = round(rps[name], 1)
            row[f"{name}_p50_ms"] = round(p50[name], 3)
        csv_rows.append(row)
    _report.append_csv(_report.result_path("bench_ray.csv"), csv_rows)
    header = ["connections"] + [f"{LABELS[n]} req/s / p50 ms" for n in names]
    header += [f"{LABELS[n]} / standalone" for n in names if n != STANDALONE]
    table = _report.markdown_table(header, rows)
    text = f"""### accelserve on Ray Serve vs standalone (`simple`, HTTP binary)

{_report.today()}, commit {_report.commit()}, {_report.machine()}; medians of {args.repeats} repeats of
{args.duration:g} s per level, `accelserve.tools.bench` (HTTP, V2 binary tensors). Ray: a 2-node
cluster on this machine (2 CPUs each), `accelserve serve --ray ... --replicas 2` (one replica per
node); "Ray proxy": Ray Serve's default HTTP proxy, then accelserve's router deployment, then a
replica; "Ray HAProxy
+ direct ingress": a second cluster started with `RAY_SERVE_ENABLE_HA_PROXY=1
RAY_SERVE_THROUGHPUT_OPTIMIZED=1` (HAProxy to Serve's direct ingress in the router's replica),
same application; "one replica direct": the first cluster, the load sent straight to one replica's own
accelserve HTTP server (the one it serves statistics on; no Ray on the request path). The standalone
server is up throughout and measured beside each. Ready after the command (cluster already up):
{", ".join(f"{LABELS[n]} {ready[n]:.1f} s" for n in ready)}. Everything (both nodes, the servers and
the load generator) shares this machine's cores with other work (load average
{os.getloadavg()[0]:.1f} at the end).

{table}

`{_report.command_line()}`
"""
    _report.write_section("server-ray", text)
    print(text)


if __name__ == "__main__":
    main()
