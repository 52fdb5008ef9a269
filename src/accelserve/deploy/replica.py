"""The Ray Serve deployments: one accelserve data plane per replica over a group of models,
and (with several groups) a router in front of them.

A replica loads its group with the same repository, schedulers and frontend code as a single
server: batching stays accelserve's (no ``@serve.batch``), and a request reaches the data plane
as the raw HTTP request it was (method, path, headers, body), so KServe V2 JSON and binary
tensors, TF Serving and OpenAI routes behave exactly as on one machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelserve.dataplane import DataPlane
from accelserve.errors import ModelNotFoundError
from accelserve.frontends.http import HttpFrontend, render_error
from accelserve.frontends.http_server import Headers, Request, Response
from accelserve.repository import ModelRepository
from accelserve.server import release_free_memory

if TYPE_CHECKING:
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse

log = logging.getLogger("accelserve.deploy")
NODE_HEADER = b"accelserve-ray-node"  # the Ray node id of the replica that answered


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

    async def load(self, name: str) -> Any:
        if name not in self.group_models:
            raise ModelNotFoundError(
                f"failed to load '{name}': no such model in this group "
                f"({', '.join(sorted(self.group_models))})"
            )
        return await super().load(name)


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
    ) -> None:
        self.repository = GroupRepository(repository, models, device)
        self.dataplane = DataPlane(self.repository, model_control=model_control, api_key=api_key)
        await self.repository.load_all()
        release_free_memory()
        self.frontend = HttpFrontend(self.dataplane, extra=_v1_handler(self.dataplane))
        self.node_header = [(NODE_HEADER, _ray_node_id().encode())]
        self.dataplane.started = True

    async def __call__(self, request: StarletteRequest) -> StarletteResponse:
        body = await request.body()
        response = await self.handle_raw(
            request.method,
            request.scope["path"],
            request.scope.get("query_string", b""),
            list(request.headers.raw),
            body,
        )
        status, headers, payload = response
        return to_starlette((status, headers + self.node_header, payload))

    async def handle_raw(
        self, method: str, path: str, query: bytes, headers: Headers, body: bytes
    ) -> Response:
        """One HTTP request, as the router forwards it."""
        return await self.frontend.handle(Request(method, path, query, headers, body))

    def check_health(self) -> None:
        if not self.dataplane.ready():
            raise RuntimeError("the data plane is not ready (stopping or not started)")

    def model_names(self) -> list[str]:
        return sorted(self.repository.group_models)

    async def __del__(self) -> None:
        # Serve calls this on a graceful stop: drain the schedulers like a single server.
        self.dataplane.stopping = True
        await self.repository.stop()


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


class GroupRouter:
    """The ingress when the repository is split into groups: a model's routes go to its
    group's deployment; server-wide routes (health, statistics, repository index) ask every
    group and combine the answers."""

    def __init__(self, groups: dict[str, Any], owners: dict[str, str]) -> None:
        self.groups = groups  # group name -> DeploymentHandle
        self.owners = owners  # model name -> group name

    async def __call__(self, request: StarletteRequest) -> StarletteResponse:
        body = await request.body()
        path = request.scope["path"]
        args = (request.method, path, request.scope.get("query_string", b""))
        headers = list(request.headers.raw)
        group = self._owner(path, body)
        if group is not None:
            return to_starlette(await self.groups[group].handle_raw.remote(*args, headers, body))
        answers = [
            await handle.handle_raw.remote(*args, headers, body) for handle in self.groups.values()
        ]
        return to_starlette(combine(path, answers))

    def _owner(self, path: str, body: bytes) -> str | None:
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[1] == "models" and parts[2] != "stats":
            return self.owners.get(parts[2].split(":")[0], _first(self.groups))
        if len(parts) == 5 and parts[:3] == ["v2", "repository", "models"]:
            return self.owners.get(parts[3], _first(self.groups))
        if path.startswith("/v1/"):  # OpenAI: the model is named in the body
            from accelserve.codecs.v2_http_json import decode_json

            try:
                model = decode_json(body).get("model")
            except Exception:  # the group's frontend reports the bad body
                model = None
            return (
                self.owners.get(model, _first(self.groups))
                if isinstance(model, str)
                else _first(self.groups)
            )
        return None


def _first(groups: dict[str, Any]) -> str:
    return next(iter(groups))


def combine(path: str, answers: list[Response]) -> Response:
    """One answer from every group's answer to a server-wide route: the first failure, or
    the statistics / index lists joined, or the first answer (health, metadata)."""
    from accelserve.codecs.v2_http_json import decode_json, encode_json

    for answer in answers:
        if answer[0] >= 400:
            return answer
    if path.rstrip("/") == "/v2/models/stats":
        stats = [s for a in answers for s in decode_json(a[2])["model_stats"]]
        return 200, answers[0][1], encode_json({"model_stats": stats})
    if path.rstrip("/") == "/v2/repository/index":
        rows = [row for a in answers for row in decode_json(a[2])]
        return 200, answers[0][1], encode_json(rows)
    return answers[0] if answers else render_error(503, "no model group is deployed")
