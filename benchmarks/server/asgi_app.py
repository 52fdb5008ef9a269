"""accelserve's HTTP frontend as a standalone ASGI app, for running it under other ASGI
servers in benchmarks/server/bench_asgi.py. The repository comes from ACCELSERVE_REPOSITORY."""

from __future__ import annotations

import os
from typing import Any

from accelserve.dataplane import DataPlane
from accelserve.frontends.http import HttpFrontend
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
    await _frontend(scope, receive, send)
