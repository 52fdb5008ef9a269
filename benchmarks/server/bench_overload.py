"""Overload and slow clients against the real server: load shedding and the header timeout.

    .venv/bin/python benchmarks/server/bench_overload.py [--connections 512] [--duration 60]

(a) **Overload**: ``--connections`` keep-alive connections, each sending `simple` infer requests
back to back for ``--duration`` seconds, against a server whose queue bound is small
(``--default-max-queue-size``, default 16) and, side by side in the same run, against the same
server with no bound (``--default-max-queue-size 0``: what the server did before, requests
queue without limit). Each answer is counted as a correct 200 (the body is byte-for-byte the
expected answer), a clean 503 (with ``Retry-After``) or anything else (another status, a wrong
body, a 503 without Retry-After, a connection error, no answer within 30 s); p50 and p99 of the
200s' latency.

(b) **Slowloris**: ``--normal`` clients measure their latency for ``--duration`` seconds, then
again while ``--attackers`` connections each send a request head one byte a second (and connect
again when the server closes them), with the server's default limits (header timeout 10 s).
Reports the normal clients' p50/p99 before and during the attack and what the attackers got.

The load generator is this process (asyncio, uvloop when installed, raw sockets), on the same
cores as the server. Writes benchmarks/results/bench_overload.csv and docs/PERFORMANCE.md's
`server-overload` block.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from accelserve.tools.bench.sweep import percentile  # noqa: E402
from accelserve.tools.examples.build import BUILDERS  # noqa: E402
from benchmarks import _report  # noqa: E402

ROW = list(range(16))
BODY = json.dumps(
    {
        "inputs": [
            {"name": n, "datatype": "INT32", "shape": [1, 16], "data": ROW}
            for n in ("INPUT0", "INPUT1")
        ]
    }
).encode()
REQUEST = (
    b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
ANSWER_TIMEOUT_S = 30.0


@dataclass
class Counts:
    ok: int = 0
    shed: int = 0  # 503 with Retry-After
    other: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, of the correct 200s
    examples: dict[str, int] = field(default_factory=dict)  # what "other" was

    def odd(self, what: str) -> None:
        self.other += 1
        self.examples[what] = self.examples.get(what, 0) + 1

    def p(self, q: float) -> float:
        return percentile(sorted(self.latencies), q) * 1000 if self.latencies else float("nan")


class Server:
    """One `accelserve serve` process on `simple` (HTTP only)."""

    def __init__(self, repository: Path, port: int, *options: str) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "accelserve.cli", "serve",
            "--model-repository", str(repository), "--http-port", str(port),
            "--grpc-port", "0", "--metrics-port", "0", "--log-level", "warning", *options,
        ]  # fmt: skip
        self.command = " ".join(command[1:])
        self.proc = subprocess.Popen(command, cwd=ROOT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.command}")
            try:
                if httpx.get(f"{self.base}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"server not ready after 120 s: {self.command}")
        answer = httpx.post(f"{self.base}/v2/models/simple/infer", content=BODY, timeout=30)
        answer.raise_for_status()
        self.expected = answer.content  # every correct 200 carries exactly these bytes

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
    return int(lines[0].split()[1]), headers, body


async def client(
    server: Server, counts: Counts, until: float, honour_retry_after: bool = False
) -> None:
    """One keep-alive connection sending requests back to back until ``until``."""
    loop = asyncio.get_running_loop()
    reader = writer = None
    while loop.time() < until:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert reader is not None
            start = time.perf_counter()  # the loop's clock counts whole milliseconds
            writer.write(REQUEST)
            status, headers, body = await asyncio.wait_for(read_answer(reader), ANSWER_TIMEOUT_S)
            elapsed = time.perf_counter() - start
            if status == 200 and body == server.expected:
                counts.ok += 1
                counts.latencies.append(elapsed)
            elif status == 503 and b"retry-after" in headers:
                counts.shed += 1
                if honour_retry_after:
                    await asyncio.sleep(float(headers[b"retry-after"]))
            else:
                counts.odd(f"status {status}" if status != 200 else "wrong 200 body")
            if headers.get(b"connection") == b"close":
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            counts.odd(type(exc).__name__)
            if writer is not None:
                writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def load(
    server: Server, connections: int, duration: float, honour_retry_after: bool = False
) -> Counts:
    counts = Counts()
    until = asyncio.get_running_loop().time() + duration
    await asyncio.gather(
        *(client(server, counts, until, honour_retry_after) for _ in range(connections))
    )
    return counts


@dataclass
class Attack:
    connections: int = 0  # made in all
    refused_408: int = 0  # heads the server answered 408 and closed
    closed_otherwise: int = 0


async def attacker(server: Server, attack: Attack, stop: asyncio.Event) -> None:
    """Sends a request head a byte a second; connects again when the server closes it."""
    head = b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"s" * 100_000
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        except OSError:
            await asyncio.sleep(1)
            continue
        attack.connections += 1
        answer = asyncio.ensure_future(reader.read(64))
        for byte in head:
            writer.write(bytes([byte]))
            done, _ = await asyncio.wait([answer], timeout=1.0)
            if done or stop.is_set():
                break
        if answer.done() and not answer.cancelled() and answer.exception() is None:
            if answer.result().startswith(b"HTTP/1.1 408"):
                attack.refused_408 += 1
            else:
                attack.closed_otherwise += 1
        answer.cancel()
        writer.close()


async def slowloris(
    server: Server, normal: int, attackers: int, duration: float
) -> tuple[Counts, Counts, Attack]:
    before = await load(server, normal, duration)
    attack, stop = Attack(), asyncio.Event()
    tasks = [asyncio.ensure_future(attacker(server, attack, stop)) for _ in range(attackers)]
    await asyncio.sleep(min(5.0, duration / 3))  # the attack is in place
    during = await load(server, normal, duration)
    stop.set()
    await asyncio.gather(*tasks)
    return before, during, attack


def run_loop(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=512, help="overload run (default 512)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per run (default 60)")
    parser.add_argument("--queue-size", type=int, default=16, help="--default-max-queue-size")
    parser.add_argument("--normal", type=int, default=16, help="slowloris: normal clients")
    parser.add_argument("--attackers", type=int, default=1000, help="slowloris: slow connections")
    parser.add_argument("--port", type=int, default=18300)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_overload_"))
    rows: list[dict[str, object]] = []
    try:
        (work / "simple").mkdir()
        shutil.copy(ROOT / "examples/model_repository/simple/config.pbtxt", work / "simple")
        BUILDERS["simple"](work / "simple")
        overload: list[tuple[str, Counts]] = []
        cases = (  # (label, queue bound, whether a client answered 503 waits Retry-After)
            (f"queue bound {args.queue_size}, clients ask again at once", args.queue_size, False),
            (f"queue bound {args.queue_size}, clients wait Retry-After", args.queue_size, True),
            ("no queue bound (as before)", 0, False),
        )
        for label, bound, wait in cases:
            server = Server(work, args.port, "--default-max-queue-size", str(bound))
            try:
                print(f"overload, {label}: {args.connections} connections")
                counts = run_loop(load(server, args.connections, args.duration, wait))
            finally:
                server.stop()
            overload.append((label, counts))
            rows.append(row("overload", label, args, counts))
        server = Server(work, args.port)
        try:
            print(f"slowloris: {args.normal} normal clients, {args.attackers} attackers")
            before, during, attack = run_loop(
                slowloris(server, args.normal, args.attackers, args.duration)
            )
        finally:
            server.stop()
        rows.append(row("slowloris", "before", args, before))
        rows.append(row("slowloris", "during", args, during, attack))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report.append_csv(_report.result_path("bench_overload.csv"), rows)
    _report.write_section("server-overload", report(args, overload, before, during, attack))
    print(report(args, overload, before, during, attack))
    return 0


def row(
    scenario: str, case: str, args: argparse.Namespace, counts: Counts, attack: Attack | None = None
) -> dict[str, object]:
    return {
        "date": _report.today(),
        "commit": _report.commit(),
        "machine": _report.machine(),
        "scenario": scenario,
        "case": case,
        "connections": args.connections if scenario == "overload" else args.normal,
        "duration_s": args.duration,
        "ok_200": counts.ok,
        "shed_503": counts.shed,
        "other": counts.other,
        "p50_ms": round(counts.p(50), 2),
        "p99_ms": round(counts.p(99), 2),
        "attack_connections": attack.connections if attack else "",
        "attack_408": attack.refused_408 if attack else "",
    }


def report(
    args: argparse.Namespace,
    overload: list[tuple[str, Counts]],
    before: Counts,
    during: Counts,
    attack: Attack,
) -> str:
    def others(c: Counts) -> str:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(c.examples.items()))
        return f"{c.other}" + (f" ({detail})" if detail else "")

    table_a = _report.markdown_table(
        [
            "server",
            "correct 200s",
            "503 + Retry-After",
            "anything else",
            "200s p50 ms",
            "200s p99 ms",
        ],
        [
            [name, c.ok, c.shed, others(c), f"{c.p(50):.1f}", f"{c.p(99):.1f}"]
            for name, c in overload
        ],
    )
    table_b = _report.markdown_table(
        ["normal clients", "correct 200s", "anything else", "p50 ms", "p99 ms"],
        [
            [name, c.ok, others(c), f"{c.p(50):.1f}", f"{c.p(99):.1f}"]
            for name, c in (("before the attack", before), ("during the attack", during))
        ],
    )
    ratio = during.p(99) / before.p(99) if before.latencies else float("nan")

    return f"""## Overload and slow clients: load shedding and the header timeout

Machine: {_report.machine()}. Date {_report.today()}, commit {_report.commit()}.

Command: `{_report.command_line()}`

(a) {args.connections} keep-alive connections sending `simple` infer requests (V2 JSON) back
to back for {args.duration:g} s, against the server with `--default-max-queue-size
{args.queue_size}` (clients answered 503 ask again at once, ignoring Retry-After: the worst
case; or wait the Retry-After of 1 s) and, in the same run, without a bound (as before the
bound existed). The load generator shares the cores with the server (and this machine with
other work: figures move between runs). Every answer was a correct 200 or a 503 with
Retry-After. A 503 is cheap but not free: when every client answered 503 asks again at once, the
server spends its event loop on 503s and the 200s' latency rises (above the unbounded server's
here); clients that honour Retry-After get fast 200s and fast 503s, and nothing waits without
limit.

{table_a}

(b) {args.normal} normal clients for {args.duration:g} s, then again while {args.attackers}
connections send a request head one byte a second (connecting again when closed), default
limits (header timeout 10 s). During the attack the attackers made {attack.connections}
connections; the server answered {attack.refused_408} of them 408 and closed them
({attack.closed_otherwise} closed otherwise; the rest were still open when the run ended).
Normal clients' p99 during vs before: {ratio:.2f}x.

{table_b}
"""


if __name__ == "__main__":
    sys.exit(main())
