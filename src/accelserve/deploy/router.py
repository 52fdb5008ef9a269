"""The application's ingress: sends each model's requests to its group's replicas, and
retries a request whose replica died on a healthy one.

Ray Serve's proxy answers 500 when the replica holding a request dies; the router instead
catches the replica's failure (``RayActorError``) and sends the request again. That is safe
for every read and every inference request: accelserve's models keep no state between
requests (no sequence batching) and answer unary calls. Repository control (load/unload) is
not retried, since it may have been applied before the replica died. Server-wide routes (health, statistics, repository index) ask every
group and combine the answers; statistics ask every replica (``deploy.peers``) and sum them.
``/metrics`` gathers every replica's Prometheus text, labelled by node and replica, and a
model's load or unload reaches every replica of its group (``deploy.fanout``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from accelserve.codecs.v2_http_json import decode_json, encode_json
from accelserve.deploy.groups import deployment_name
from accelserve.deploy.replica import to_starlette
from accelserve.frontends.http import render_error
from accelserve.frontends.http_server import Headers, Response

if TYPE_CHECKING:
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse

log = logging.getLogger("accelserve.deploy")

ATTEMPTS = 6  # a killed replica is out of the routing table well within these
BACKOFF_S = (0.0, 0.05, 0.2, 0.5, 1.0, 2.0)


class GroupRouter:
    def __init__(self, groups: dict[str, Any], owners: dict[str, str]) -> None:
        from ray import serve

        self.groups = groups  # group name -> DeploymentHandle of its GroupReplica deployment
        self.owners = owners  # model name -> group name
        self.first = next(iter(groups))
        self.app = serve.get_replica_context().app_name
        self.registry: Any = None

    async def __call__(self, request: StarletteRequest) -> StarletteResponse:
        body = await request.body()
        path: str = request.scope["path"]
        method = request.method
        args = (method, path, request.scope.get("query_string", b""), list(request.headers.raw))
        model = model_of(path, body)
        if method in ("GET", "HEAD") and path == "/metrics":
            return to_starlette(await self.fanout_metrics())
        if method == "POST" and model is not None and _is_load_or_unload(path):
            return to_starlette(await self.broadcast(path, model, args[3], body))
        if method == "GET" and path.rstrip("/").endswith("/stats"):
            groups = list(self.groups) if model is None else [self.owners.get(model, self.first)]
            summed = await self.cluster_stats(path, groups)
            if summed is not None:
                return to_starlette(summed)
        if model is not None or not _server_wide(path):
            group = self.owners.get(model or "", self.first)  # unknown: its group says 404
            retry = method in ("GET", "HEAD") or not _is_control(path)
            return to_starlette(await self.forward(group, args, body, retry))
        answers = [await self.forward(g, args, body, True) for g in self.groups]
        return to_starlette(combine(path, answers))

    def peers(self, groups: list[str]) -> tuple[Any, list[str]]:
        """The registry, and the keys its replicas of ``groups`` are recorded under."""
        from accelserve.deploy.peers import registry

        if self.registry is None:
            self.registry = registry()
        return self.registry, [f"{self.app}/{deployment_name(g)}" for g in groups]

    async def cluster_stats(self, path: str, groups: list[str]) -> Response | None:
        from accelserve.deploy.peers import cluster_stats

        return await cluster_stats(*self.peers(groups), path)

    async def fanout_metrics(self) -> Response:
        from accelserve.deploy.fanout import cluster_metrics

        return await cluster_metrics(*self.peers(list(self.groups)))

    async def broadcast(self, path: str, model: str, headers: Headers, body: bytes) -> Response:
        """Load or unload on every replica of the model's group (not retried: see above)."""
        from accelserve.deploy.fanout import broadcast_control

        registry, (key,) = self.peers([self.owners.get(model, self.first)])
        return await broadcast_control(registry, key, path, headers, body)

    async def forward(
        self, group: str, args: tuple[Any, ...], body: bytes, retry: bool
    ) -> Response:
        from ray.exceptions import RayActorError

        handle = self.groups[group]
        attempts = ATTEMPTS if retry else 1
        for attempt in range(attempts):
            try:
                result: Response = await handle.handle_raw.remote(*args, body)
                return result
            except RayActorError as exc:
                log.warning("group '%s': replica failed (%s); attempt %d", group, exc, attempt + 1)
                if attempt + 1 < attempts:
                    await asyncio.sleep(BACKOFF_S[attempt + 1])
        return render_error(
            503, f"model group '{group}': the replica serving the request failed; try again"
        )


def model_of(path: str, body: bytes) -> str | None:
    """The model a request names: in the path (V2, TF Serving, repository control) or, for
    OpenAI's routes, in the JSON body."""
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[1] == "models" and parts[2] != "stats":
        return parts[2].split(":")[0]  # TF Serving: /v1/models/m:predict
    if len(parts) == 5 and parts[:3] == ["v2", "repository", "models"]:
        return parts[3]
    if parts[0] == "v1" and body:
        try:
            data = decode_json(body)
        except Exception:  # the group's frontend reports the bad body
            return None
        model = data.get("model") if isinstance(data, dict) else None
        return model if isinstance(model, str) else None
    return None


def _server_wide(path: str) -> bool:
    return path.rstrip("/") in (
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/stats",
        "/v2/repository/index",
    )


def _is_load_or_unload(path: str) -> bool:
    parts = path.strip("/").split("/")
    return (
        len(parts) == 5
        and parts[:3] == ["v2", "repository", "models"]
        and parts[4]
        in (
            "load",
            "unload",
        )
    )


def _is_control(path: str) -> bool:
    return path.startswith("/v2/repository/")


def _bytes(answer: Response) -> bytes:
    body = answer[2]
    assert isinstance(body, bytes), "server-wide routes answer whole bodies"
    return body


def combine(path: str, answers: list[Response]) -> Response:
    """One answer from every group's answer to a server-wide route: the first failure, or
    the statistics / index lists joined, or the first answer (health, metadata)."""
    if not answers:
        return render_error(503, "no model group is deployed")
    for answer in answers:
        if answer[0] >= 400:
            return answer
    headers: Headers = [h for h in answers[0][1] if h[0] == b"content-type"]
    if path.rstrip("/") == "/v2/models/stats":
        stats = [s for a in answers for s in decode_json(_bytes(a))["model_stats"]]
        return 200, headers, encode_json({"model_stats": stats})
    if path.rstrip("/") == "/v2/repository/index":
        rows = [row for a in answers for row in decode_json(_bytes(a))]
        return 200, headers, encode_json(rows)
    return answers[0]
