"""System shared memory vs binary HTTP for a 16 MiB FP32 tensor (Triton's shared-memory extension).

    PYTHONPATH=src .venv/bin/python -m benchmarks.server.bench_shm [--repeats 5] [--requests 40]

One accelserve process serves `identity_fp32` (ONNX Identity, FP32 [N], N = 4 Mi elements:
16 MiB in and 16 MiB out). tritonclient.http drives it from this process, one request at a time,
in two ways that take turns (the order alternates between repeats):

- binary HTTP: the input in the request body and the output in the response body
  (tritonclient's default binary tensors);
- system shared memory: the client writes the input into a registered region
  (`set_shared_memory_region`, one 16 MiB copy, counted) and names it; the server writes the
  output into a second region, which the client reads as an array over the region.

Each repeat runs ``--requests`` requests per way after a warm-up; req/s is requests / wall time,
p99 the 99th percentile of the per-request latencies; the table gives medians over the repeats.
Writes benchmarks/results/bench_shm.csv and docs/PERFORMANCE.md's `server-shm` block.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _report  # noqa: E402

ELEMENTS = 4 * 1024 * 1024  # FP32: 16 MiB
NBYTES = ELEMENTS * 4
MODEL = "identity_fp32"
BINARY, SHM = "binary HTTP", "system shared memory"
CONFIG = f"""
platform: "onnxruntime_onnx"
max_batch_size: 0
input [{{ name: "IN" data_type: TYPE_FP32 dims: [ {ELEMENTS} ] }}]
output [{{ name: "OUT" data_type: TYPE_FP32 dims: [ {ELEMENTS} ] }}]
"""


def build_identity(root: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["IN"], ["OUT"])],
        "identity",
        [helper.make_tensor_value_info("IN", TensorProto.FLOAT, [ELEMENTS])],
        [helper.make_tensor_value_info("OUT", TensorProto.FLOAT, [ELEMENTS])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    version = root / MODEL / "1"
    version.mkdir(parents=True)
    (root / MODEL / "config.pbtxt").write_text(CONFIG)
    onnx.save(model, str(version / "model.onnx"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(repository: Path) -> tuple[subprocess.Popen[bytes], int]:
    import httpx

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "accelserve.cli", "serve", "--model-repository"]
    command += [str(repository), "--http-port", str(port), "--grpc-port", "0"]
    command += ["--metrics-port", "0", "--log-level", "warning"]
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 200:
                return process, port
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("accelserve did not become ready in 120 s")


def binary_request(client: object, data: np.ndarray) -> Callable[[], np.ndarray]:
    import tritonclient.http as httpclient

    def call() -> np.ndarray:
        tensor = httpclient.InferInput("IN", [ELEMENTS], "FP32")
        tensor.set_data_from_numpy(data, binary_data=True)
        out = httpclient.InferRequestedOutput("OUT", binary_data=True)
        result = client.infer(MODEL, [tensor], outputs=[out])  # type: ignore[attr-defined]
        return result.as_numpy("OUT")

    return call


def shm_request(client: object, data: np.ndarray, regions: list) -> Callable[[], np.ndarray]:
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    key = f"/accelserve_bench_shm_{os.getpid()}"
    inputs = shm.create_shared_memory_region("bench_in", key + "_in", NBYTES)
    outputs = shm.create_shared_memory_region("bench_out", key + "_out", NBYTES)
    regions += [inputs, outputs]
    client.register_system_shared_memory("bench_in", key + "_in", NBYTES)  # type: ignore[attr-defined]
    client.register_system_shared_memory("bench_out", key + "_out", NBYTES)  # type: ignore[attr-defined]

    def call() -> np.ndarray:
        shm.set_shared_memory_region(inputs, [data])  # the client's copy of its data: counted
        tensor = httpclient.InferInput("IN", [ELEMENTS], "FP32")
        tensor.set_shared_memory("bench_in", NBYTES)
        out = httpclient.InferRequestedOutput("OUT")
        out.set_shared_memory("bench_out", NBYTES)
        client.infer(MODEL, [tensor], outputs=[out])  # type: ignore[attr-defined]
        return shm.get_contents_as_numpy(outputs, np.float32, [ELEMENTS])

    return call


def measure(call: Callable[[], np.ndarray], requests: int) -> tuple[float, float]:
    """(req/s, p99 latency in ms) over ``requests`` sequential requests."""
    latencies = []
    start = time.perf_counter()
    for _ in range(requests):
        t0 = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    p99 = float(np.percentile(latencies, 99)) * 1e3
    return requests / elapsed, p99


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    data = np.random.default_rng(0).standard_normal(ELEMENTS, dtype=np.float32)
    regions: list = []
    with tempfile.TemporaryDirectory() as tmp:
        build_identity(Path(tmp))
        process, port = start_server(Path(tmp))
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120.0)
        load = [os.getloadavg()[0]]
        try:
            calls = {BINARY: binary_request(client, data), SHM: shm_request(client, data, regions)}
            for way, call in calls.items():  # correctness and warm-up
                np.testing.assert_array_equal(call(), data, err_msg=way)
                measure(call, 3)
            results: dict[str, list[tuple[float, float]]] = {BINARY: [], SHM: []}
            ways = list(calls)
            for repeat in range(args.repeats):
                for way in ways if repeat % 2 == 0 else ways[::-1]:
                    rps, p99 = measure(calls[way], args.requests)
                    results[way].append((rps, p99))
                    print(f"[bench] {way}: {rps:.1f} req/s, p99 {p99:.1f} ms", file=sys.stderr)
        finally:
            load.append(os.getloadavg()[0])
            client.unregister_system_shared_memory()
            for handle in regions:
                shm.destroy_shared_memory_region(handle)
            process.terminate()
            process.wait(30)
    write(results, args, load)
    return 0


def write(
    results: dict[str, list[tuple[float, float]]], args: argparse.Namespace, load: list[float]
) -> None:
    machine, commit, date = _report.machine(), _report.commit(), _report.today()
    base_rps = statistics.median(r for r, _ in results[BINARY])
    base_p99 = statistics.median(p for _, p in results[BINARY])
    rows, csv_rows = [], []
    for way in (BINARY, SHM):
        rps = statistics.median(r for r, _ in results[way])
        p99 = statistics.median(p for _, p in results[way])
        spread = f"{min(r for r, _ in results[way]):.1f}-{max(r for r, _ in results[way]):.1f}"
        speedup = "1.00x (baseline)" if way == BINARY else f"{rps / base_rps:.2f}x"
        p99_ratio = "1.00x" if way == BINARY else f"{base_p99 / p99:.2f}x lower"
        rows.append([way, f"{rps:.1f}", spread, f"{p99:.1f}", speedup, p99_ratio])
        csv_rows.append(
            {"scenario": "identity_fp32_16MiB", "way": way, "rps_median": round(rps, 2),
             "p99_ms_median": round(p99, 2), "speedup_vs_binary": round(rps / base_rps, 3),
             "repeats": args.repeats, "requests": args.requests,
             "device": machine, "commit": commit, "date": date}
        )  # fmt: skip
    _report.append_csv(_report.result_path("bench_shm.csv"), csv_rows)
    header = ["way", "req/s (median)", "req/s (min-max)", "p99 ms (median)", "req/s vs binary",
              "p99 vs binary"]  # fmt: skip
    table = _report.markdown_table(header, rows)
    _report.write_section(
        "server-shm",
        f"""## System shared memory vs binary HTTP (16 MiB FP32 in, 16 MiB out)

Machine: {machine}. Date {date}, commit {commit}.
Command: `{_report.command_line()}`.
One accelserve process serving `identity_fp32` (ONNX Identity on FP32 [{ELEMENTS}]); tritonclient.http
in this process, one request at a time, {args.requests} requests per way per repeat, the two
ways taking turns, medians over {args.repeats} repeats. Binary HTTP carries the input in the
body and the output in the response; shared memory has the client copy its input into a
registered region (counted) and the server write the output into another one. The host's
1-minute load average was {load[0]:.1f} at the start and {load[1]:.1f} at the end (other work
shares its cores): read the ratios.

{table}
""",
    )


if __name__ == "__main__":
    raise SystemExit(main())
