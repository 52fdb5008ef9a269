"""Losing a Ray node under load, and getting it back: accelserve on Ray vs Ray Serve.

    PYTHONPATH=src .venv/bin/python -m benchmarks.server.bench_ray_recovery [--repeats 3]

Issue 12: removing the worker node under load costs no unary request, and capacity is back
within 5 s of a node re-joining. Each system runs on a fresh 2-node cluster on this machine
(tests/ray_cluster.py: head and worker, 2 CPUs each, the GCS declaring a lost node dead after
3 missed health checks of 0.5 s, as in tests/e2e/test_ray_serve.py), one after the other:

- accelserve: ``accelserve serve --ray ADDR --replicas 2`` over Triton's ``simple`` with two CPU
  instances, so that each replica asks for 2 CPUs (a whole node); default ingress (the front
  door, deploy/frontdoor.py);
- Ray Serve: benchmarks/server/ray_serve_simple.py (the same ONNX file, ``@serve.batch``, Ray's
  HAProxy and direct ingress) with ``--replica-cpus 2``, so that its lost replica also waits
  for a new node.

``--clients`` threads send V2 binary requests throughout (httpx, keep-alive); every answer
names the Ray node of its replica (header). Each repeat: SIGKILL the worker node's processes
(``LocalRayCluster.lose_node``), count the requests that fail until the GCS lists one node and
``--settle`` more seconds have passed, add a worker node, and measure the seconds from the
node registering ("Ray runtime started") to (a) the replacement replica's process existing
(its ``ray::ServeReplica`` title) and (b) the first answer from a replica on the new node. The
Serve controller's log adds when the replica finished starting (its constructor: models
loaded). Writes benchmarks/results/bench_ray_recovery.csv and docs/PERFORMANCE.md's
``server-ray-recovery`` block.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.server.bench_ray import (  # noqa: E402
    ACCELSERVE_REPLICA,
    RAYSERVE_REPLICA,
    REGISTERED,
    launch,
    simple_repository,
    stop,
)
from benchmarks.server.bench_ray_recovery_report import (  # noqa: E402
    ACCELSERVE,
    RAYSERVE,
    Cycle,
    report,
)
from tests.ray_cluster import FAST_NODE_DEATH, LocalRayCluster, free_port  # noqa: E402

NODE_HEADERS = {ACCELSERVE: "accelserve-ray-node", RAYSERVE: "rayserve-node"}
DEPLOYMENTS = {ACCELSERVE: "accelserve-default", RAYSERVE: "SimpleOnnx"}
REPLICA_TITLES = {ACCELSERVE: ACCELSERVE_REPLICA, RAYSERVE: RAYSERVE_REPLICA}
WAIT_S = 90.0  # the most any one phase may take before the run is declared failed
VALUE = np.arange(16, dtype=np.int32).reshape(1, 16)


def v2_request() -> tuple[bytes, dict[str, str]]:
    """One KServe V2 binary-tensor request for ``simple`` (INPUT0 = INPUT1 = 0..15)."""
    raw = VALUE.tobytes()
    inputs = [
        {
            "name": name,
            "datatype": "INT32",
            "shape": [1, 16],
            "parameters": {"binary_data_size": len(raw)},
        }
        for name in ("INPUT0", "INPUT1")
    ]
    outputs = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    head = json.dumps({"inputs": inputs, "outputs": outputs}).encode()
    headers = {
        "Inference-Header-Content-Length": str(len(head)),
        "Content-Type": "application/octet-stream",
    }
    return head + raw + raw, headers


def check_answer(status: int, headers: dict[str, str], body: bytes, node_header: str) -> str:
    """The node that answered; raises ValueError naming what is wrong with the answer."""
    if status != 200:
        raise ValueError(f"status {status}: {body[:200]!r}")
    node = headers.get(node_header)
    if not node:
        raise ValueError(f"no {node_header} header in the answer")
    length = int(headers.get("inference-header-content-length", len(body)))
    (first, *_) = json.loads(body[:length])["outputs"]
    size = first["parameters"]["binary_data_size"]
    got = np.frombuffer(body[length : length + size], np.int32).reshape(VALUE.shape)
    if first["name"] != "OUTPUT0" or not np.array_equal(got, VALUE + VALUE):
        raise ValueError(f"wrong answer: {first['name']} = {got.tolist()}")
    return node


class Load:
    """``clients`` threads sending requests until ``stop``; every outcome is recorded as
    (monotonic time of the answer, node id or None, error or None)."""

    def __init__(self, url: str, node_header: str, clients: int) -> None:
        self.url = f"{url}/v2/models/simple/infer"
        self.node_header = node_header
        self.events: list[tuple[float, str | None, str | None]] = []
        self.halt = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _client(self) -> None:
        import httpx

        body, headers = v2_request()
        with httpx.Client(timeout=30.0) as http:
            while not self.halt.is_set():
                try:
                    answer = http.post(self.url, content=body, headers=headers)
                    node = check_answer(
                        answer.status_code, dict(answer.headers), answer.content, self.node_header
                    )
                    self.events.append((time.monotonic(), node, None))
                except Exception as exc:  # connection errors, timeouts, bad answers: failures
                    self.events.append((time.monotonic(), None, repr(exc)[:300]))

    def since(self, start: float) -> list[tuple[float, str | None, str | None]]:
        return [e for e in list(self.events) if e[0] >= start]

    def failures(self, start: float, end: float) -> list[str]:
        return [e[2] for e in list(self.events) if start <= e[0] < end and e[2] is not None]

    def nodes(self, start: float) -> set[str]:
        return {e[1] for e in self.since(start) if e[1] is not None}

    def stop(self) -> None:
        self.halt.set()
        for thread in self.threads:
            thread.join(60)


def wait_for(what: str, done: Callable[[], bool], timeout: float = WAIT_S) -> float:
    """Poll ``done`` every 50 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout:.0f} s")
        time.sleep(0.05)
    return time.monotonic()


def wait_answers(load: Load, start: float, count: int) -> None:
    wait_for(f"{count} answers", lambda: sum(1 for e in load.since(start) if e[1]) >= count)


LOG_TIME = re.compile(r"\S+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def serve_log_events(
    cluster: LocalRayCluster, deployment: str, after_wall: float
) -> dict[str, float]:
    """From Serve's logs, for the first replica of ``deployment`` after ``after_wall``:
    "started", the wall-clock time the controller saw it started (constructor returned, first
    health check passed), "constructor", the seconds these took, and (accelserve)
    "registered", when the replica entered the front door's registry; absent where the logs
    do not say."""
    found: dict[str, float] = {}
    logs = Path(cluster.temp_dir).glob("session_*/logs/serve/*.log")
    for log in sorted(logs):
        controller = log.name.startswith("controller_")
        if not controller and not log.name.startswith("replica_"):
            continue
        for line in log.read_text(errors="replace").splitlines():
            match = LOG_TIME.match(line)
            if not match:
                continue
            when = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if when < after_wall:
                continue
            if REGISTERED in line and not controller:
                found["registered"] = min(when, found.get("registered", when))
            started = controller and f"'{deployment}'" in line and "started successfully" in line
            if started and "started" not in found:
                found["started"] = when
                took = re.search(r"health check took ([\d.]+)s", line)
                found["constructor"] = float(took[1]) if took else math.nan
    return found


def cycle(cluster: LocalRayCluster, load: Load, system: str, settle: float) -> Cycle:
    """Lose the worker node under load, wait, add one; the measures of this repeat."""
    title = REPLICA_TITLES[system]
    start = time.monotonic()
    wait_answers(load, start, 20)
    before = set(cluster.processes(title))
    lost = time.monotonic()
    cluster.lose_node(cluster.nodes[-1])
    one_node = wait_for("the GCS listing 1 node", lambda: cluster.alive_nodes() == 1)
    time.sleep(settle)  # the loss settles: Serve notices, its replacement waits for a node
    wait_answers(load, time.monotonic(), 20)  # the remaining node answers
    settled = time.monotonic()
    known = load.nodes(start)
    cluster.add_worker()  # returns once the node has registered ("Ray runtime started")
    joined, joined_wall = time.monotonic(), time.time()
    replica = wait_for(
        "a replacement replica process", lambda: bool(set(cluster.processes(title)) - before)
    )

    def new_node_answered() -> bool:
        return any(e[1] is not None and e[1] not in known for e in load.since(joined))

    wait_for("an answer from the new node", new_node_answered)
    answer = min(e[0] for e in load.since(joined) if e[1] is not None and e[1] not in known)
    events = wait_events(cluster, DEPLOYMENTS[system], joined_wall)
    result = {
        "lost_to_one_node_s": one_node - lost,
        "failed_during_loss": len(load.failures(lost, settled)),
        "failed_during_join": len(load.failures(joined, answer)),
        "join_to_replica_process_s": replica - joined,
        "join_to_replica_started_s": events.get("started", math.nan) - joined_wall,
        "replica_constructor_s": events.get("constructor", math.nan),
        "join_to_registered_s": events.get("registered", math.nan) - joined_wall,
        "join_to_first_answer_s": answer - joined,
    }
    # What the front door adds: from the replica in the registry to its first answer.
    result["registered_to_first_answer_s"] = answer - joined - result["join_to_registered_s"]
    errors = load.failures(lost, answer)
    if errors:
        print(f"[bench_ray_recovery] {system}: {len(errors)} failed, e.g. {errors[0]}")
    print(f"[bench_ray_recovery] {system}: {json.dumps(result)}", file=sys.stderr)
    return result


def wait_events(cluster: LocalRayCluster, deployment: str, after_wall: float) -> dict[str, float]:
    """The controller's log lines may trail the answer by a moment."""
    deadline = time.monotonic() + 5
    while True:
        events = serve_log_events(cluster, deployment, after_wall)
        if "started" in events or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def run_system(
    system: str, args: argparse.Namespace, work: Path, env: dict[str, str]
) -> list[Cycle]:
    models = work / "models"
    cluster = LocalRayCluster(
        head_cpus=2, worker_cpus=2, env=FAST_NODE_DEATH, haproxy=system == RAYSERVE
    )
    server = None
    load = None
    try:
        cluster.add_worker()
        port = free_port()
        cluster_env = {**cluster.env, "PYTHONPATH": env["PYTHONPATH"]}
        log = work / f"{system}.log"
        url = f"http://127.0.0.1:{port}"
        if system == ACCELSERVE:
            command = [
                *(sys.executable, "-m", "accelserve.cli", "serve", "--model-repository"),
                *(str(models), "--device", "cpu", "--ray", cluster.address, "--replicas", "2"),
                *("--http-port", str(port), "--grpc-port", str(free_port())),
                *("--metrics-port", "0"),
            ]
            marker = "accelserve on Ray Serve:"  # the whole app deployed, the door open
            server, _ = launch(command, f"{url}/v2/health/ready", cluster_env, log, marker)
            for name in ("metadata", "config"):  # what the Ray Serve peer replays
                suffix = "/config" if name == "config" else ""
                with urllib.request.urlopen(f"{url}/v2/models/simple{suffix}") as answer:
                    (work / f"{name}.json").write_bytes(answer.read())
        else:
            command = [
                *(sys.executable, "-m", "benchmarks.server.ray_serve_simple"),
                *("--address", cluster.address, "--port", str(port)),
                *("--model-dir", str(models / "simple"), "--replicas", "2"),
                *("--replica-cpus", "2", "--metadata", str(work / "metadata.json")),
                *("--config", str(work / "config.json")),
            ]
            ready = f"{url}/v2/models/simple"
            server, _ = launch(command, ready, cluster_env, log, "ray serve app running")
        load = Load(url, NODE_HEADERS[system], args.clients)
        start = time.monotonic()
        wait_for("answers from both nodes", lambda: len(load.nodes(start)) == 2)
        results = []
        for repeat in range(args.repeats):
            print(f"[bench_ray_recovery] {system}, repeat {repeat + 1}", file=sys.stderr)
            try:
                results.append(cycle(cluster, load, system, args.settle))
            except RuntimeError as exc:  # a phase timed out: say where to look
                raise RuntimeError(
                    f"{system}, repeat {repeat + 1}: {exc} (server log: {log})"
                ) from exc
        return results
    finally:
        if load is not None:
            load.stop()
        if server is not None:
            stop(server)
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="threads sending requests")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds of load after the loss, before a join"
    )
    parser.add_argument(
        "--systems",
        nargs="+",
        choices=[ACCELSERVE, RAYSERVE],
        default=[ACCELSERVE, RAYSERVE],
        help=f"{RAYSERVE} needs {ACCELSERVE} (its metadata)",
    )
    args = parser.parse_args()
    if RAYSERVE in args.systems and ACCELSERVE not in args.systems:
        parser.error(f"--systems {RAYSERVE} needs {ACCELSERVE}: it replays its metadata")
    work = Path(tempfile.mkdtemp(prefix="bench_ray_recovery"))
    simple_repository(work, instances=2)  # a replica asks for 2 CPUs: a whole node
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    load = [os.getloadavg()[0]]
    runs = {}
    for system in (ACCELSERVE, RAYSERVE):  # accelserve first: it writes the peer's metadata
        if system in args.systems:
            runs[system] = run_system(system, args, work, env)
        load.append(os.getloadavg()[0])
    report(runs, load, args)
    shutil.rmtree(work, ignore_errors=True)  # kept when a run fails: the servers' logs


if __name__ == "__main__":
    main()
