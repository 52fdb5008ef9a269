"""Which ASGI server and JSON library carry accelserve's HTTP frontend fastest?

Runs the same app (benchmarks/server/asgi_app.py, the `simple` model) under uvicorn with the
httptools parser, uvicorn with h11, and granian, each driven by `wrk` (C load generator,
16 connections, JSON infer requests) in the same run, several rounds, medians. Also times
orjson against the standard library on the infer request and response bodies.

    python -m benchmarks.server.bench_asgi [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from benchmarks._report import command_line, machine, markdown_table, today, write_section

ROOT = Path(__file__).resolve().parents[2]
BODY = json.dumps(
    {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        ]
    }
)
LUA = f"""
wrk.method = "POST"
wrk.body = [[{BODY}]]
wrk.headers["Content-Type"] = "application/json"
"""


def servers(port: int) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "uvicorn+httptools": [
            py,
            "-m",
            "uvicorn",
            "benchmarks.server.asgi_app:app",
            "--port",
            str(port),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        "uvicorn+h11": [
            py,
            "-m",
            "uvicorn",
            "benchmarks.server.asgi_app:app",
            "--port",
            str(port),
            "--http",
            "h11",
            "--loop",
            "uvloop",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        "granian": [
            py,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--log-level",
            "warning",
            "benchmarks.server.asgi_app:app",
        ],
    }


def wait_ready(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server on port {port} not ready")


def run_wrk(port: int, seconds: int, script: Path) -> float:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            "-c16",
            f"-d{seconds}s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/v2/models/simple/infer",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            if "Non-2xx" in out:
                raise RuntimeError(out)
            return float(line.split()[1])
    raise RuntimeError(out)


def json_timings(n: int = 20000) -> dict[str, float]:
    raw = BODY.encode()
    result = {}
    for name, loads, dumps in (
        ("orjson", orjson.loads, orjson.dumps),
        ("json", json.loads, lambda o: json.dumps(o).encode()),
    ):
        start = time.perf_counter()
        for _ in range(n):
            dumps(loads(raw))
        result[name] = (time.perf_counter() - start) / n * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk")
    from accelserve.tools.examples.build import build_simple

    work = Path(tempfile.mkdtemp())
    repo = work / "models"
    (repo / "simple").mkdir(parents=True)
    shutil.copy(ROOT / "examples/model_repository/simple/config.pbtxt", repo / "simple")
    build_simple(repo / "simple")
    script = work / "post.lua"
    script.write_text(LUA)
    env = {**os.environ, "ACCELSERVE_REPOSITORY": str(repo), "PYTHONPATH": str(ROOT)}
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, cmd in servers(18731).items():
            proc = subprocess.Popen(
                cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                wait_ready(18731)
                run_wrk(18731, 2, script)  # warm-up
                results.setdefault(name, []).append(run_wrk(18731, args.seconds, script))
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
    base = statistics.median(results["uvicorn+httptools"])
    rows = [
        [
            n,
            f"{statistics.median(v):.0f}",
            f"{statistics.median(v) / base:.2f}",
            " ".join(f"{x:.0f}" for x in v),
        ]
        for n, v in results.items()
    ]
    timings = json_timings()
    md = (
        f"ASGI server for the HTTP frontend: `simple` JSON infer, wrk 1 thread, 16 connections, "
        f"{args.seconds} s x {args.rounds} rounds (medians), same run.\n\n"
        + markdown_table(["server", "req/s (median)", "vs uvicorn+httptools", "runs"], rows)
        + "\n\nJSON library, decode+encode of the same body: "
        + ", ".join(f"{k} {v:.1f} µs" for k, v in timings.items())
        + f" (orjson {timings['json'] / timings['orjson']:.1f}x faster).\n\n"
        f"Machine: {machine()}. Date: {today()}. Command: `{command_line()}`"
    )
    write_section("asgi-server", md)
    print(md)


if __name__ == "__main__":
    main()
