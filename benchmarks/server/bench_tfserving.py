"""Triton's `simple` through accelserve's TF Serving REST route against its KServe V2 JSON route,
in one server, in the same run.

    python -m benchmarks.server.bench_tfserving [--repeats 7] [--duration 1.5] [--conc 1 16]

One accelserve process serves `simple` (ONNX Runtime); for each repeat and concurrency the three
request forms take turns (order rotated between repeats): V2 JSON (`POST /v2/models/simple/infer`),
TF Serving row (`POST /v1/models/simple:predict` with `instances`) and TF Serving columnar
(`inputs`). Each is a closed loop of keep-alive connections (accelserve's load generator's HTTP
client) for `--duration` seconds after a warm-up; every response is checked once. Reports the
median req/s over repeats and each TF Serving form's ratio to V2 JSON; writes
benchmarks/results/bench_tfserving.csv and docs/PERFORMANCE.md's `server-tfserving` block.

TensorFlow Serving itself is not measured: its `tensorflow_model_server` binary ships as a Docker
image or an apt package from Google's own repository, and this machine has neither a Docker
daemon nor that repository; the `tensorflow-serving-api` wheel holds only client stubs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from accelserve.tools.bench.httpclient import HttpConnection  # noqa: E402
from benchmarks import _report  # noqa: E402
from benchmarks.server.peers.launch import free_port  # noqa: E402

X0, X1 = list(range(16)), [1] * 16
V2_BODY = json.dumps(
    {
        "inputs": [
            {"name": n, "datatype": "INT32", "shape": [1, 16], "data": x}
            for n, x in (("INPUT0", X0), ("INPUT1", X1))
        ]
    }
).encode()
ROW_BODY = json.dumps({"instances": [{"INPUT0": X0, "INPUT1": X1}]}).encode()
COLUMNAR_BODY = json.dumps({"inputs": {"INPUT0": [X0], "INPUT1": [X1]}}).encode()
FORMS = {  # name -> (path, body)
    "V2 JSON": ("/v2/models/simple/infer", V2_BODY),
    "TF Serving row": ("/v1/models/simple:predict", ROW_BODY),
    "TF Serving columnar": ("/v1/models/simple:predict", COLUMNAR_BODY),
}
WANT = [x + 1 for x in X0]


def _request(port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _check(form: str, body: bytes) -> None:
    data = json.loads(body)
    if form == "V2 JSON":
        got = next(o["data"] for o in data["outputs"] if o["name"] == "OUTPUT0")
    elif form == "TF Serving row":
        got = data["predictions"][0]["OUTPUT0"]
    else:
        got = data["outputs"]["OUTPUT0"][0]
    if got != WANT:
        raise SystemExit(f"{form}: wrong answer {got}")


async def _drive(port: int, form: str, conc: int, seconds: float) -> float:
    path, body = FORMS[form]
    payload = _request(port, path, body)
    conns = [HttpConnection("127.0.0.1", port, timeout=30.0) for _ in range(conc)]
    status, first = await conns[0].request(payload)
    if status != 200:
        raise SystemExit(f"{form}: HTTP {status}: {first[:300]!r}")
    _check(form, first)
    done = 0
    stop = 0.0

    async def loop(conn: HttpConnection) -> None:
        nonlocal done
        while time.perf_counter() < stop:
            status, _ = await conn.request(payload)
            if status != 200:
                raise SystemExit(f"{form}: HTTP {status}")
            done += 1

    stop = time.perf_counter() + min(1.0, seconds / 3)  # warm-up
    await asyncio.gather(*(loop(c) for c in conns))
    done = 0
    start = time.perf_counter()
    stop = start + seconds
    await asyncio.gather(*(loop(c) for c in conns))
    return done / (time.perf_counter() - start)


def _start_server(repository: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "accelserve.cli", "serve", "--model-repository"]
    command += [str(repository), "--http-port", str(port), "--grpc-port", str(free_port())]
    command += ["--metrics-port", str(free_port()), "--log-level", "warning"]
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            status, _ = asyncio.run(
                HttpConnection("127.0.0.1", port, 2.0).request(_request(port, *FORMS["V2 JSON"]))
            )
            if status == 200:
                return process, port
        except Exception:  # not listening yet
            time.sleep(0.2)
    process.kill()
    raise SystemExit("accelserve did not become ready in 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--duration", type=float, default=1.5)
    parser.add_argument("--conc", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    from accelserve.tools.examples.build import BUILDERS

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "simple"
        target.mkdir()
        shutil.copy(ROOT / "examples" / "model_repository" / "simple" / "config.pbtxt", target)
        BUILDERS["simple"](target)
        process, port = _start_server(Path(tmp))
        load = [os.getloadavg()[0]]
        try:
            rps: dict[tuple[str, int], list[float]] = {}
            forms = list(FORMS)
            for repeat in range(args.repeats):
                order = forms[repeat % 3 :] + forms[: repeat % 3]
                for conc in args.conc:
                    for form in order:
                        value = asyncio.run(_drive(port, form, conc, args.duration))
                        rps.setdefault((form, conc), []).append(value)
                        print(f"[bench] {form} c={conc}: {value:.0f} req/s", file=sys.stderr)
        finally:
            load.append(os.getloadavg()[0])
            process.terminate()
            process.wait(30)
    _write(rps, args, load)
    return 0


def _write(
    rps: dict[tuple[str, int], list[float]], args: argparse.Namespace, load: list[float]
) -> None:
    machine, commit, date = _report.machine(), _report.commit(), _report.today()
    rows, csv_rows = [], []
    for conc in args.conc:
        base = statistics.median(rps[("V2 JSON", conc)])
        for form in FORMS:
            values = rps[(form, conc)]
            value = statistics.median(values)
            ratio = "1.00x (baseline)" if form == "V2 JSON" else f"{value / base:.2f}x"
            spread = f"{min(values):.0f}-{max(values):.0f}"
            rows.append([conc, form, f"{value:.0f}", spread, ratio])
            csv_rows.append(
                {"scenario": "simple", "route": form, "concurrency": conc,
                 "rps_median": round(value, 1), "ratio_vs_v2_json": round(value / base, 3),
                 "repeats": args.repeats, "duration_s": args.duration,
                 "device": machine, "commit": commit, "date": date}
            )  # fmt: skip
    _report.append_csv(_report.result_path("bench_tfserving.csv"), csv_rows)
    header = ["connections", "route", "req/s (median)", "req/s (min-max)", "vs V2 JSON"]
    table = _report.markdown_table(header, rows)
    _report.write_section(
        "server-tfserving",
        f"""## TF Serving REST route vs KServe V2 JSON (`simple`, one server)

Machine: {machine}. Date {date}, commit {commit}.
One accelserve process serving `simple` (ONNX Runtime, one [1, 16] INT32 pair per request); the
three request forms take turns on the same server, closed loops of keep-alive HTTP/1.1
connections driven from this process (sharing the cores), {args.duration:g} s each after a
warm-up, medians over {args.repeats} repeats. Both TF Serving forms carry the same numbers as
the V2 JSON body; only the wire format differs (the data plane, batcher and model are shared).
The host's 1-minute load average was {load[0]:.1f} at the start and {load[1]:.1f} at the
end (other work shares its cores): read the ratios, not the absolute rates.

{table}

TensorFlow Serving's own server is not in the table: its `tensorflow_model_server` binary ships
as a Docker image or an apt package from Google's own repository, and this machine has neither a
Docker daemon nor that repository (the `tensorflow-serving-api` wheel holds only client stubs).

Command: `{_report.command_line()}`""",
    )


if __name__ == "__main__":
    raise SystemExit(main())
