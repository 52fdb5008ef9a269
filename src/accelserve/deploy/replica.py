"""The Ray Serve deployment of a group of models: one accelserve data plane per replica.

A replica loads its group with the same repository, schedulers and frontend code as a single
server: batching stays accelserve's (no ``@serve.batch``), and a request reaches the data plane
as the raw HTTP request it was (method, path, headers, body), so KServe V2 JSON and binary
tensors, TF Serving and OpenAI routes behave exactly as on one machine.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelserve.dataplane import DataPlane
from accelserve.errors import ModelNotFoundError
from accelserve.frontends.busy_poll import BusyPoll
from accelserve.frontends.http import DEFAULT_MAX_BODY, HttpFrontend, render_error
from accelserve.frontends.http_server import Headers, HttpServer, Request, Response
from accelserve.load_overrides import LoadOverride
from accelserve.model import ModelRecord
from accelserve.repository import ModelRepository
from accelserve.server import release_free_memory

if TYPE_CHECKING:
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse

log = logging.getLogger("accelserve.deploy")
NODE_HEADER = b"accelserve-ray-node"  # the Ray node id of the replica that answered
REPLICA_HEADER = b"accelserve-ray-replica"  # and its Serve replica id (its own server's answers)


def _ray_node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


class GroupRepository(ModelRepository):
    """The repository as one group sees it: only the group's models exist."""

    def __init__(self, root: str | Path, models: list[str], default_device: str) -> None:
        super().__init__(root, default_device)
        self.group_models = frozenset(models)

    def scan(self) -> list[str]:
        return [name for name in super().scan() if name in self.group_models]

    async def load(self, name: str, override: LoadOverride | None = None) -> ModelRecord:
        if name not in self.group_models:
            raise ModelNotFoundError(
                f"failed to load '{name}': no such model in this group "
                f"({', '.join(sorted(self.group_models))})"
            )
        return await super().load(name, override)


class GroupReplica:
    """One replica: loads the group in its constructor (Serve awaits an async ``__init__``),
    answers HTTP through ``HttpFrontend``, and reports unhealthy once its data plane is not
    ready, so Serve replaces it."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        repository: str,
        models: list[str],
        device: str = "auto",
        model_control: bool = False,
        api_key: str | None = None,
        grpc: bool = False,
        busy_poll_us: int = 0,
    ) -> None:
        self.serve_grpc = grpc
        self.busy_poll_us = busy_poll_us
        self.grpc: Any = None
        self.repository = GroupRepository(repository, models, device)
        self.dataplane = DataPlane(self.repository, model_control=model_control, api_key=api_key)
        await self.repository.load_all()
        release_free_memory()
        self.frontend = HttpFrontend(self.dataplane, extra=_v1_handler(self.dataplane))
        self.node_header = [(NODE_HEADER, _ray_node_id().encode())]
        self.metrics = await _metrics(self.dataplane)
        await self._serve_peers()
        self.dataplane.started = True

    async def _serve_peers(self) -> None:
        """accelserve's own HTTP server (and gRPC server, for the front door) on this node's
        address, recorded in the registry, so that the router can ask every replica
        (``deploy.peers``) and the front door can send requests straight to it
        (``deploy.frontdoor``)."""
        import ray
        from ray import serve

        from accelserve.deploy.peers import registry

        host = ray.util.get_node_ip_address()
        grpc_address = None
        if self.serve_grpc:  # the front door's gRPC port balances over these
            from accelserve.frontends.grpc import start_grpc_server

            self.grpc = await start_grpc_server(self.dataplane, host, 0, DEFAULT_MAX_BODY)
            grpc_address = f"{host}:{self.grpc.port}"
        context = serve.get_replica_context()
        self.peer_key = f"{context.app_name}/{context.deployment}"
        self.replica_id = context.replica_id.unique_id
        self.peer_headers = [*self.node_header, (REPLICA_HEADER, self.replica_id.encode())]
        # No busy polling by default (a single server's default is on): behind a balancer, a
        # replica's window after each answer overlaps its peers' work, and on shared cores
        # took from it; --busy-poll-us asks for it (latency at low load).
        busy_poll = BusyPoll(
            asyncio.get_running_loop(), self.busy_poll_us, self.repository.activity.busy
        )
        self.http = HttpServer(
            self.handle_peer, render_error, DEFAULT_MAX_BODY, on_response=busy_poll.touch
        )
        await self.http.start(host, 0)
        self.registry = registry()
        url = f"http://{host}:{self.http.port}"
        await self.registry.add.remote(self.peer_key, self.replica_id, url, grpc_address)
        # Serve's replica log (timestamped): when the front door may start sending here.
        logging.getLogger("ray.serve").info("accelserve replica registered: %s", url)

    async def __call__(self, request: StarletteRequest) -> StarletteResponse:
        body = await request.body()
        path = request.scope["path"]
        if request.method == "GET" and path.rstrip("/").endswith("/stats"):
            from accelserve.deploy.peers import cluster_stats

            summed = await cluster_stats(self.registry, [self.peer_key], path)
            if summed is not None:  # every replica's statistics, not only this one's
                return to_starlette(summed)
        response = await self.handle_raw(
            request.method,
            path,
            request.scope.get("query_string", b""),
            list(request.headers.raw),
            body,
        )
        return to_starlette(response)

    async def handle_peer(self, request: Request) -> Response:
        """A request on this replica's own server: the data plane's routes, and ``/metrics``
        (which the router gathers from every replica); answers name the node and replica."""
        if request.path == "/metrics" and self.metrics is not None:
            status, headers, payload = await self.metrics.handle(request)
        else:
            status, headers, payload = await self.frontend.handle(request)
        return status, headers + self.peer_headers, payload

    async def handle_raw(
        self, method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> Response:
        """One HTTP request, as the router forwards it; the answer names this replica's node."""
        status, out, payload = await self.frontend.handle(
            Request(method, path, query, headers, body)
        )
        if not isinstance(payload, bytes):  # a stream (generate_stream) crosses Ray whole
            payload = b"".join([chunk async for chunk in payload])
        return status, out + self.node_header, payload

    def check_health(self) -> None:
        if not self.dataplane.ready():
            raise RuntimeError("the data plane is not ready (stopping or not started)")

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metric (``deploy.autoscale``): the requests this
        replica's data plane holds, whether they came through Serve or the front door."""
        from accelserve.deploy.autoscale import ONGOING_METRIC

        return {ONGOING_METRIC: float(self.dataplane.requests_in_flight)}

    def model_names(self) -> list[str]:
        return sorted(self.repository.group_models)

    async def __del__(self) -> None:
        # Serve calls this on a graceful stop: drain the schedulers like a single server.
        self.dataplane.stopping = True
        await self.registry.remove.remote(self.peer_key, self.replica_id)
        await self.http.stop()
        if self.grpc is not None:
            await self.grpc.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        await self.repository.stop()


async def _metrics(dataplane: DataPlane) -> Any:
    """The replica's Prometheus metrics (``frontends.metrics``), or None without
    prometheus-client."""
    try:
        from accelserve.frontends.metrics import metrics_for
    except ImportError:
        log.warning("no /metrics on this replica: pip install 'accelserve[metrics]'")
        return None
    return await metrics_for(dataplane)


def _v1_handler(dataplane: DataPlane) -> Any:
    """TF Serving's REST routes, then OpenAI's, as the single server mounts them."""
    from accelserve.frontends.tfserving import TFServingFrontend

    try:
        from accelserve.frontends.openai import OpenAIFrontend
    except ImportError:
        return TFServingFrontend(dataplane, fallback=None)
    return TFServingFrontend(dataplane, fallback=OpenAIFrontend(dataplane))


def to_starlette(response: Response) -> StarletteResponse:
    from starlette.responses import Response as StarletteResponse

    status, headers, payload = response
    result = StarletteResponse(content=payload, status_code=status)
    # Our headers as they are, plus the content-length Starlette computed.
    length = [(k, v) for k, v in result.raw_headers if k == b"content-length"]
    result.raw_headers = list(headers) + length
    return result
