"""KServe V2 REST frontend with Triton's extensions: routes, V2 bodies, error status codes.

The HTTP/1.1 transport is ``http_server`` (httptools under an asyncio.Protocol; why not an ASGI
server is told there): the infer route is the hot path, and a framework's request/response
objects and routing cost more than the whole V2 decode of a small tensor. Binary requests and
responses go through ``codecs.v2_http_cache`` (a repeated JSON header is parsed once); JSON
goes through orjson (codecs.v2_http_json): 8x faster than the standard library on the same bodies.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

from accelserve.codecs.v2 import DecodedRequest, describe
from accelserve.codecs.v2_http_cache import decode_request, encode_response
from accelserve.codecs.v2_http_json import decode_json, encode_json
from accelserve.codecs.v2_shared_memory import read_shared_inputs, write_shared_outputs
from accelserve.dataplane import DataPlane
from accelserve.errors import AccelServeError, InvalidArgumentError, ModelNotFoundError
from accelserve.frontends import generate
from accelserve.frontends.errors import bearer_token, error_headers, expect_method, http_status
from accelserve.frontends.http_server import Headers, Request, Response
from accelserve.frontends.http_shared_memory import KINDS as SHARED_MEMORY_KINDS
from accelserve.frontends.http_shared_memory import shared_memory_route

log = logging.getLogger("accelserve.http")

JSON = [(b"content-type", b"application/json")]
DEFAULT_MAX_BODY = 64 * 1024 * 1024
HEADER_LENGTH = b"inference-header-content-length"
ROUTE_ACTIONS = ("", "ready", "config", "stats", "infer", "generate", "generate_stream")
OPENAPI_PATH = "/openapi.json"  # the OpenAPI document of every route (frontends/openapi.json)

# An optional extra handler (the OpenAI frontend) gets the routes it claims:
# (method, path, headers, body) -> a response, or None for "not mine".
ExtraHandler = Callable[[str, str, Headers, bytes], Awaitable[Response | None]]


class HttpFrontend:
    def __init__(self, dataplane: DataPlane, extra: ExtraHandler | None = None) -> None:
        self.dataplane = dataplane
        self.extra = extra

    async def handle(self, request: Request) -> Response:
        """Answer one request; errors become their status code and a JSON ``error``."""
        try:
            return await self._route(request)
        except AccelServeError as exc:
            return error_response(exc)
        except Exception:  # never a stack trace to the client
            log.exception("unhandled error on %s %s", request.method, request.path)
            return render_error(500, "internal server error")

    async def _route(self, request: Request) -> Response:
        method, path = request.method, request.path
        parts = path.strip("/").split("/")
        if parts[0] == "v2":
            if len(parts) >= 3 and parts[1] in SHARED_MEMORY_KINDS:
                registry = self.dataplane.shared_memory
                if parts[1] == "cudasharedmemory":  # CUDA driver calls (and CuPy's import)
                    return await asyncio.to_thread(
                        shared_memory_route, registry, method, parts, request.body
                    )
                return shared_memory_route(registry, method, parts, request.body)
            if len(parts) >= 3 and parts[1] == "models" and parts[2] != "stats":
                return await self._model_route(method, parts, request)
            return await self._server_route(method, parts, request)
        if path == OPENAPI_PATH:
            expect_method(method, "GET", path)
            return 200, JSON, openapi_document()
        if self.extra is not None:
            response = await self.extra(method, path, request.headers, request.body)
            if response is not None:
                return response
        raise ModelNotFoundError(f"no route for {method} {path}")

    async def _model_route(self, method: str, parts: list[str], request: Request) -> Response:
        # /v2/models/{m}[/versions/{v}][/ready|/config|/stats|/infer]
        name, rest = parts[2], parts[3:]
        version = ""
        if len(rest) >= 2 and rest[0] == "versions":
            version, rest = rest[1], rest[2:]
        action = rest[0] if rest else ""
        route = "/" + "/".join(parts)
        if len(rest) > 1 or action not in ROUTE_ACTIONS:
            raise ModelNotFoundError(f"no route for {method} {route}")
        dp = self.dataplane
        if action == "infer":
            expect_method(method, "POST", route)
            return await self._infer(name, version, request)
        if action in ("generate", "generate_stream"):
            expect_method(method, "POST", route)
            return await self._generate(name, version, request, action == "generate_stream")
        expect_method(method, "GET", route)
        if action == "":
            return _json(dp.model_metadata(name, version))
        if action == "ready":
            ready = dp.known_model_ready(name, version)
            return (200 if ready else 400), JSON, encode_json({"ready": ready})
        if action == "config":
            return _json(dp.model_config(name, version))
        return _json(dp.statistics(name, version))

    async def _infer(self, name: str, version: str, request: Request) -> Response:
        registry = self.dataplane.shared_memory
        try:
            decoded = _decode(request)
            if decoded.shared_inputs:
                read_shared_inputs(decoded, registry)
        except AccelServeError as exc:
            self.dataplane.record_failure(name, version, exc)  # counted like any failure
            raise
        response = await self.dataplane.infer(name, version, decoded)
        if any(r.shared is not None for r in decoded.outputs):
            write_shared_outputs(name, response.outputs, decoded.outputs, registry)
        payload, json_length = encode_response(
            response.model_name,
            response.model_version,
            response.id,
            response.outputs,
            decoded.outputs,
            decoded.binary_data_output,
        )
        if json_length is None:
            return 200, JSON, payload
        return (
            200,
            [
                (b"content-type", b"application/octet-stream"),
                (HEADER_LENGTH, str(json_length).encode()),
            ],
            payload,
        )

    async def _generate(self, name: str, version: str, request: Request, stream: bool) -> Response:
        """Triton's generate extension (frontends/generate.py)."""
        try:
            decoded = generate.decode_generate(self.dataplane, name, version, request.body)
        except AccelServeError as exc:
            self.dataplane.record_failure(name, version, exc)
            raise
        if not stream:
            return 200, JSON, await generate.generate(self.dataplane, name, version, decoded)
        events = await generate.generate_stream(self.dataplane, name, version, decoded)
        return (
            200,
            [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            events,
        )

    async def _server_route(self, method: str, parts: list[str], request: Request) -> Response:
        dp = self.dataplane
        route = "/" + "/".join(parts)
        if route == "/v2":
            expect_method(method, "GET", route)
            return _json(dp.server_metadata())
        if route == "/v2/health/live":
            expect_method(method, "GET", route)
            return (200 if dp.live() else 503), JSON, b"{}"
        if route == "/v2/health/ready":
            expect_method(method, "GET", route)
            return (200 if dp.ready() else 503), JSON, b"{}"
        if route == "/v2/models/stats":
            expect_method(method, "GET", route)
            return _json(dp.statistics())
        if route == "/v2/repository/index":
            expect_method(method, "POST", route)
            body = request.body
            options = _json_object(body) if body.strip() else {}
            ready = options.get("ready", False)
            if type(ready) is not bool:
                raise InvalidArgumentError(
                    f"repository index 'ready': expected true or false; received {describe(ready)}"
                )
            return _json(dp.repository_index(ready))
        if len(parts) == 5 and parts[1] == "repository" and parts[2] == "models":
            expect_method(method, "POST", route)
            key = bearer_token(request.header(b"authorization"))
            if parts[4] == "load":
                dp.authorize_control(key)  # before the body is looked at
                await dp.load_model(parts[3], key, _load_parameters(parts[3], request.body))
                return 200, JSON, b"{}"
            if parts[4] == "unload":
                await dp.unload_model(parts[3], key)
                return 200, JSON, b"{}"
        raise ModelNotFoundError(f"no route for {method} {route}")


def _load_parameters(name: str, body: bytes) -> dict[str, object]:
    """A load request's parameters, with the file overrides' base64 text as bytes."""
    options = _json_object(body) if body.strip() else {}
    parameters = options.get("parameters", {})
    if type(parameters) is not dict:
        raise InvalidArgumentError(
            f"failed to load '{name}': 'parameters': expected an object; received "
            f"{describe(parameters)}"
        )
    return {
        key: _base64(name, key, value) if key.startswith("file:") else value
        for key, value in parameters.items()
    }


def _base64(name: str, key: str, value: object) -> bytes:
    try:
        if type(value) is not str:
            raise ValueError
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidArgumentError(
            f"failed to load '{name}': file override '{key}': expected the file's content "
            f"as base64 text; received {describe(value)}"
        ) from None


def _decode(request: Request) -> DecodedRequest:
    header_length = None
    value = request.header(HEADER_LENGTH)
    if value is not None:
        if not value.isdigit():
            raise InvalidArgumentError(
                f"Inference-Header-Content-Length: expected a non-negative integer; "
                f"received {value.decode(errors='replace')!r}"
            )
        header_length = int(value)
    return decode_request(request.body, header_length)


@cache
def openapi_document() -> bytes:
    """The OpenAPI 3.1 document of the HTTP API, read from the package once."""
    return resources.files("accelserve.frontends").joinpath("openapi.json").read_bytes()


def error_response(exc: AccelServeError) -> Response:
    status, headers, body = render_error(http_status(exc), exc.message)
    return status, headers + error_headers(exc), body


def render_error(status: int, message: str) -> Response:
    return status, JSON, encode_json({"error": message})


def _json(data: Any) -> Response:
    return 200, JSON, encode_json(data)


def _json_object(body: bytes) -> dict[str, Any]:
    data = decode_json(body)
    if not isinstance(data, dict):
        raise InvalidArgumentError(
            f"request body: expected a JSON object; received {type(data).__name__}"
        )
    return data
