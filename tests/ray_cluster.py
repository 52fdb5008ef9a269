"""A real multi-node Ray cluster on this machine, for tests and benchmarks.

Every node binds 127.0.0.1 and ports of its own, under a temp dir of its own, and runs
``ray start --block`` in a new session: stopping the cluster ends exactly those process groups
(and any process left that runs from its temp dir), never another user's Ray (``ray stop``
would end every Ray process of the host).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.conftest import ServerProcess

RAY = [sys.executable, "-c", "from ray.scripts.scripts import main; main()"]
# Ray's proxy sends requests to the replicas of its own node first; tests want to see them all.
ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0",
    "RAY_SERVE_PROXY_PREFER_LOCAL_AZ_ROUTING": "0",
}

# The GCS declares a lost node dead after 3 missed checks of 0.5 s (Ray's default: 5 of 3 s).
FAST_NODE_DEATH = {
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive ports free now (Ray picks among them later)."""
    for _ in range(50):
        start = free_port()
        if start + count > 65535:
            continue
        try:
            sockets = []
            for port in range(start, start + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return start
    raise RuntimeError(f"no {count} consecutive free ports found")


class LocalRayCluster:
    """A head node plus ``workers`` worker nodes (custom resource ``worker_node``)."""

    def __init__(
        self,
        head_cpus: int = 1,
        worker_cpus: int = 1,
        env: dict[str, str] | None = None,
        haproxy: bool = False,
    ):
        self.temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: socket paths
        # Every process of the cluster inherits this: how processes() finds ours.
        self.env = {**os.environ, **ENV, **(env or {}), "ACCELSERVE_TEST_RAY": self.temp_dir}
        if haproxy:
            self.env.update(self.haproxy_env())
        self.nodes: list[subprocess.Popen[bytes]] = []  # the nodes running (head first)
        self._logs: list[Path] = []
        self._started = 0
        self.worker_cpus = worker_cpus

        def head() -> list[str]:  # fresh ports on every try
            self.port = free_port()
            self.address = f"127.0.0.1:{self.port}"
            return [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}",
                f"--num-cpus={head_cpus}",
            ]

        self._start_registered("head", head)

    def haproxy_env(self) -> dict[str, str]:
        """Ray Serve's fast front door: HAProxy, direct ingress to the replicas, throughput
        settings; its files under this cluster's temp dir (the defaults are host-wide), its
        ports free ones."""
        base = os.path.join(self.temp_dir, "haproxy")
        os.makedirs(base, exist_ok=True)
        http, grpc = free_port_range(100), free_port_range(100)
        return {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{base}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{base}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": base,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{base}/server-state",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http + 99),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc + 99),
        }

    def add_worker(self) -> subprocess.Popen[bytes]:
        """Start a worker node; return once it has registered with the GCS."""
        return self._start_registered(
            f"worker{self._started}",
            lambda: [
                f"--address={self.address}",
                f"--num-cpus={self.worker_cpus}",
                "--resources=" + json.dumps({"worker_node": 1}),
            ],
        )

    def _start_registered(
        self, name: str, args: Callable[[], list[str]]
    ) -> subprocess.Popen[bytes]:
        """Start a node and wait until it has registered. A node that exits while starting
        is started again on fresh ports, twice at most: a port free_port() found can be
        taken before Ray binds it, and then the node's raylet never registers."""
        tries = 0
        while True:
            tries += 1
            node = self._start(name, args())
            try:
                self._wait_nodes(len(self.nodes))
                return node
            except RuntimeError:
                if tries == 3 or node.poll() is None:  # retried: only the new node's failure
                    raise
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            if len(self.nodes) == 1:  # the head: whatever its try left (GCS, raylet) goes too
                for pid in self._leftover_pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self.nodes.pop()
            self._logs.pop()

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        ports = [
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            "--disable-usage-stats",
            "--block",
        ]
        self._started += 1
        log = Path(self.temp_dir) / f"{name}.out"
        self._logs.append(log)
        with open(log, "wb") as out:
            node = subprocess.Popen(
                [*RAY, "start", *args, *ports],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.nodes.append(node)
        return node

    def alive_nodes(self) -> int:
        """Nodes the GCS lists as alive (``ray list nodes`` needs the dashboard; ask the GCS)."""
        code = (
            f"import ray, json; ray.init(address={self.address!r}, logging_level='error');"
            "print(json.dumps(sum(1 for n in ray.nodes() if n['Alive'])))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, env=self.env, timeout=60
        )
        if result.returncode != 0 or not result.stdout.strip():
            return 0
        # The count is the first line: Ray may print its own news after it (a node marked dead).
        return int(result.stdout.strip().splitlines()[0])

    def _wait_nodes(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node, log in zip(self.nodes, self._logs, strict=True):
                if node.poll() is not None:
                    raise RuntimeError(f"ray node exited:\n{log.read_text()[-3000:]}")
            text = "".join(log.read_text(errors="replace") for log in self._logs)
            if text.count("Ray runtime started") >= count:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{count} Ray nodes not up after {timeout}s")

    def stop_node(self, node: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        """End one node: its ``ray start`` session (raylet, workers, ...) by process group."""
        if node.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, sig)
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()

    def lose_node(self, node: subprocess.Popen[bytes]) -> None:
        """A node failure: SIGKILL its whole process group (raylet, object store, the replicas
        it runs) with no chance to deregister, and forget it (``add_worker`` adds another)."""
        self.stop_node(node, signal.SIGKILL)
        index = self.nodes.index(node)
        del self.nodes[index], self._logs[index]

    def stop(self) -> None:
        # Every node at once: each takes seconds to wind down, and none needs another.
        running = [node for node in self.nodes if node.poll() is None]
        for node in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5  # a head often ignores it: SIGKILL then, and sweep
        for node in running:
            try:
                node.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
        for pid in {*self._leftover_pids(), *self.processes("")}:  # "": all of ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def processes(self, title: str, name: str | None = None) -> list[int]:
        """Pids of this cluster's processes whose title (Ray sets ``ray::<actor>``) starts
        with ``title`` and, if given, whose executable is ``name`` (HAProxy, ours or Ray's:
        both inherit the cluster's environment)."""
        marker = f"ACCELSERVE_TEST_RAY={self.temp_dir}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
                if name is not None and (entry / "comm").read_text().strip() != name:
                    continue
            except OSError:
                continue
            if command.startswith(title.encode()) and marker in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

    def _leftover_pids(self) -> list[int]:
        """Processes still running that were started for this cluster (their command line
        names its temp dir or GCS address)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if self.temp_dir.encode() in command or self.address.encode() in command:
                pids.append(int(entry.name))
        return pids


@contextlib.contextmanager
def two_nodes(**options: Any) -> Iterator[LocalRayCluster]:
    """A head and one worker node (``LocalRayCluster``'s options), stopped afterwards: the body
    of the Ray tests' module-wide cluster fixtures."""
    cluster = LocalRayCluster(**options)
    try:
        cluster.add_worker()
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def serving_on_ray(
    repository: Path, cluster: LocalRayCluster, *args: str
) -> Iterator[ServerProcess]:
    """``accelserve serve --ray`` on ``cluster`` with ``args``, once the command says the whole
    application is deployed (ready answers as soon as one replica is up); it must exit cleanly."""
    from tests.conftest import ServerProcess

    process = ServerProcess(repository, "--ray", cluster.address, *args, env=cluster.env)
    deadline = time.monotonic() + 120
    while "accelserve on Ray Serve:" not in process.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.output()[-3000:]
