"""Composition root: settings -> repository -> data plane -> frontends, and graceful shutdown.

On SIGTERM or SIGINT the server reports not ready, stops accepting, lets every request it
already accepted finish, stops the schedulers (which drain their queues), then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from accelserve.dataplane import DataPlane
from accelserve.frontends.http import DEFAULT_MAX_BODY, HttpFrontend
from accelserve.repository import ModelRepository

log = logging.getLogger("accelserve.server")


@dataclass
class ServerSettings:
    model_repository: str
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001  # None disables the frontend
    metrics_port: int | None = 8002
    device: str = "auto"  # default device for models without instance_group
    model_control_mode: str = "none"  # "none" or "explicit"
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    log_level: str = "info"


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the server coordinates every frontend."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_async(settings: ServerSettings, started: asyncio.Event | None = None) -> None:
    if settings.model_control_mode not in ("none", "explicit"):
        raise ValueError(
            f"model_control_mode: expected 'none' or 'explicit'; received {settings.model_control_mode!r}"
        )
    api_key = settings.api_key or os.environ.get("ACCELSERVE_API_KEY") or None
    repository = ModelRepository(settings.model_repository, default_device=settings.device)
    dataplane = DataPlane(
        repository, model_control=settings.model_control_mode == "explicit", api_key=api_key
    )
    await repository.load_all()

    app = HttpFrontend(dataplane, settings.max_body_bytes, extra=_openai_handler(dataplane))
    http = _Uvicorn(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.http_port,
            loop="none",  # we already run on uvloop (see run())
            http="httptools",
            lifespan="off",
            log_level=settings.log_level,
            access_log=False,
            # Per-request work we do not need: proxy header rewriting, Server/Date headers.
            proxy_headers=False,
            server_header=False,
            date_header=False,
            timeout_keep_alive=60,
            backlog=4096,
        )
    )
    extra_servers: list[Any] = []
    if settings.grpc_port is not None:
        extra_servers.append(await _start_grpc(dataplane, settings, settings.grpc_port))
    if settings.metrics_port is not None:
        extra_servers.append(await _start_metrics(dataplane, settings, settings.metrics_port))

    loop = asyncio.get_running_loop()

    def request_stop(signum: int) -> None:
        log.info("received %s: draining", signal.Signals(signum).name)
        dataplane.stopping = True
        http.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    dataplane.started = True
    if started is not None:
        started.set()
    try:
        await http.serve()
    finally:
        dataplane.stopping = True
        for server in extra_servers:
            await server.stop()
        await repository.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


def _openai_handler(dataplane: DataPlane) -> Any:
    try:
        from accelserve.frontends.openai import OpenAIFrontend
    except ImportError:
        return None
    return OpenAIFrontend(dataplane)


async def _start_grpc(dataplane: DataPlane, settings: ServerSettings, port: int) -> Any:
    try:
        from accelserve.frontends.grpc import start_grpc_server
    except ImportError as exc:
        raise SystemExit(
            f"the gRPC frontend needs grpcio ({exc}); pip install 'accelserve[grpc]' or pass --grpc-port 0"
        ) from None
    return await start_grpc_server(dataplane, settings.host, port, settings.max_body_bytes)


async def _start_metrics(dataplane: DataPlane, settings: ServerSettings, port: int) -> Any:
    try:
        from accelserve.metrics import start_metrics_server
    except ImportError as exc:
        raise SystemExit(
            f"the metrics endpoint needs prometheus-client ({exc}); pip install 'accelserve[metrics]' or pass --metrics-port 0"
        ) from None
    return await start_metrics_server(dataplane, settings.host, port)


def run(settings: ServerSettings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve_async(settings))
