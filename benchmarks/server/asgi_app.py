"""accelserve's HTTP frontend as a standalone ASGI app, for running it under other ASGI
servers in benchmarks/server/bench_asgi.py. The repository comes from ACCELSERVE_REPOSITORY.

accelserve itself serves HTTP with its own server (accelserve.frontends.http_server); this
adapter hands each ASGI request to the same ``HttpFrontend.handle``."""

from __future__ import annotations

import os
from typing import Any

from accelserve.dataplane import DataPlane
from accelserve.frontends.http import HttpFrontend
from accelserve.frontends.http_server import Request
from accelserve.repository import ModelRepository

_repository = ModelRepository(os.environ["ACCELSERVE_REPOSITORY"], default_device="cpu")
_dataplane = DataPlane(_repository)
_frontend = HttpFrontend(_dataplane)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await _repository.load_all()
                _dataplane.started = True
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await _repository.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    request = Request(
        scope["method"], scope["path"], scope["query_string"], scope["headers"], b"".join(chunks)
    )
    status, headers, body = await _frontend.handle(request)
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
