"""How the load generator talks to a V2 server: the transport interface and its HTTP form.

A transport reads the model's metadata, config and statistics, turns input tensors into wire
payloads once (before any timing), and hands out sessions: one session is what one concurrent
client uses (one keep-alive connection over HTTP). ``Session.infer(i)`` sends payload ``i`` and
returns None on success or a short error text; it never raises for a failed request, so failures
are counted, not lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import quote

import numpy as np

from accelserve.errors import AccelServeError, ErrorCode
from accelserve.tools.bench.httpclient import HttpConnection, HttpError, build_request
from accelserve.tools.bench.inputs import ModelInfo, http_body

ERROR_TEXT_LIMIT = 200  # keep error keys short: they are counted by text


class LoadgenError(AccelServeError):
    """The server cannot be benchmarked as asked (unreachable, unknown model, bad inputs)."""

    code = ErrorCode.UNAVAILABLE


class Session(Protocol):
    async def infer(self, index: int) -> str | None: ...

    def close(self) -> None: ...


class Transport(Protocol):
    description: str

    async def open(self) -> None: ...

    async def metadata(self) -> dict[str, Any]: ...

    async def config(self) -> dict[str, Any] | None: ...

    async def stats(self) -> dict[str, Any] | None: ...

    def prepare(self, info: ModelInfo, tensors: Sequence[Mapping[str, np.ndarray]]) -> None: ...

    async def probe(self) -> None: ...

    def session(self) -> Session: ...

    async def close(self) -> None: ...


def _error_text(status: int, body: bytes) -> str:
    """``HTTP 400: <the server's message>`` from a V2 error body ``{"error": ...}``."""
    try:
        message = json.loads(body).get("error", "")
    except (ValueError, AttributeError):
        message = body[:ERROR_TEXT_LIMIT].decode("utf-8", "replace")
    return f"HTTP {status}: {message}"[:ERROR_TEXT_LIMIT]


class HttpSession:
    __slots__ = ("_conn", "_payloads")

    def __init__(self, conn: HttpConnection, payloads: list[bytes]) -> None:
        self._conn = conn
        self._payloads = payloads

    async def infer(self, index: int) -> str | None:
        try:
            status, body = await self._conn.request(self._payloads[index])
        except HttpError as exc:
            return str(exc)[:ERROR_TEXT_LIMIT]
        return None if status == 200 else _error_text(status, body)

    def close(self) -> None:
        self._conn.close()


class HttpTransport:
    """KServe V2 over HTTP/1.1: binary tensor data (Triton's extension) or plain JSON."""

    def __init__(
        self,
        host: str,
        port: int,
        model: str,
        version: str = "",
        *,
        binary: bool = True,
        timeout: float = 30.0,
    ) -> None:
        self.host, self.port, self.timeout, self.binary = host, port, timeout, binary
        self.model, self.version = model, version
        self._base = f"/v2/models/{quote(model, safe='')}"
        if version:
            self._base += f"/versions/{quote(version, safe='')}"
        self._control = HttpConnection(host, port, timeout, want_headers=True)
        self._payloads: list[bytes] = []
        self._info: ModelInfo | None = None
        self.description = f"http://{host}:{port} ({'binary' if binary else 'JSON'} tensors)"

    async def open(self) -> None:
        pass  # connections open on first use

    async def _get(self, path: str) -> tuple[int, bytes]:
        try:
            return await self._control.request(
                build_request("GET", path, f"{self.host}:{self.port}")
            )
        except HttpError as exc:
            raise LoadgenError(f"GET http://{self.host}:{self.port}{path}: {exc}") from None

    async def metadata(self) -> dict[str, Any]:
        status, body = await self._get(self._base)
        if status != 200:
            raise LoadgenError(f"GET {self._base}: {_error_text(status, body)}")
        return dict(json.loads(body))

    async def config(self) -> dict[str, Any] | None:
        status, body = await self._get(self._base + "/config")
        return dict(json.loads(body)) if status == 200 else None

    async def stats(self) -> dict[str, Any] | None:
        status, body = await self._get(self._base + "/stats")
        return dict(json.loads(body)) if status == 200 else None

    def prepare(self, info: ModelInfo, tensors: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._info = info
        self._payloads = []
        for t in tensors:
            body, header_len = http_body(t, info, self.binary)
            headers: dict[str, Any] = {"Content-Type": "application/json"}
            if header_len is not None:
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Inference-Header-Content-Length": header_len,
                }
            host = f"{self.host}:{self.port}"
            self._payloads.append(build_request("POST", self._base + "/infer", host, body, headers))

    async def probe(self) -> None:
        """One request, fully decoded: fail fast and clearly if the server rejects our inputs."""
        try:
            status, body = await self._control.request(self._payloads[0])
        except HttpError as exc:
            raise LoadgenError(f"POST {self._base}/infer: {exc}") from None
        if status != 200:
            raise LoadgenError(
                f"the server rejected the generated request: {_error_text(status, body)}"
            )
        header_len = self._control.headers.get(b"inference-header-content-length")
        head = body[: int(header_len)] if header_len else body
        try:
            outputs = {o["name"] for o in json.loads(head).get("outputs", [])}
        except (ValueError, KeyError, TypeError):
            raise LoadgenError(f"POST {self._base}/infer: response is not V2 JSON") from None
        missing = sorted(set(self._info.outputs if self._info else ()) - outputs)
        if missing:
            raise LoadgenError(f"POST {self._base}/infer: response lacks outputs {missing}")

    def session(self) -> HttpSession:
        return HttpSession(HttpConnection(self.host, self.port, self.timeout), self._payloads)

    async def close(self) -> None:
        self._control.close()


def split_url(url: str, default_port: int) -> tuple[str, str, int]:
    """``[http://|grpc://]host[:port]`` -> (scheme or "", host, port)."""
    scheme = ""
    if "://" in url:
        scheme, url = url.split("://", 1)
    url = url.rstrip("/")
    if "/" in url:
        raise ValueError(f"--url {url!r}: give host:port only, without a path")
    host, sep, port = url.rpartition(":")
    if not sep or "]" in port:
        host, port = url, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--url: port must be a number, got {port!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"--url: port must be within 1..65535, got {number}")
    return scheme, host, number
