"""Composition root: settings -> repository -> data plane -> frontends, and graceful shutdown.

On SIGTERM or SIGINT the server reports not ready, stops accepting, lets every request it
already accepted finish, stops the schedulers (which drain their queues), then exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from typing import Any

from accelserve.dataplane import DataPlane
from accelserve.frontends.busy_poll import DEFAULT_WINDOW_US, BusyPoll
from accelserve.frontends.http import DEFAULT_MAX_BODY, HttpFrontend, render_error
from accelserve.frontends.http_limits import DEFAULT_MAX_QUEUE_SIZE, HttpLimits
from accelserve.frontends.http_server import HttpServer
from accelserve.repository import ModelRepository
from accelserve.scheduling.activity import CoreActivity

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
    load_models: tuple[str, ...] = ()  # explicit mode: loaded at start-up ("*": all)
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY
    http_limits: HttpLimits = field(default_factory=HttpLimits)  # frontends/http_limits.py
    # Queued requests per model (and priority level) where its config sets no max_queue_size.
    default_max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    busy_poll_us: int = DEFAULT_WINDOW_US  # frontends/busy_poll.py; 0 disables
    log_level: str = "info"


async def serve_async(settings: ServerSettings, started: asyncio.Event | None = None) -> None:
    if settings.model_control_mode not in ("none", "explicit"):
        raise ValueError(
            f"model_control_mode: expected 'none' or 'explicit'; received {settings.model_control_mode!r}"
        )
    activity = CoreActivity()  # whether model work holds the cores, for busy polling
    busy_poll = BusyPoll(asyncio.get_running_loop(), settings.busy_poll_us, activity.busy)
    api_key = settings.api_key or os.environ.get("ACCELSERVE_API_KEY") or None
    repository = ModelRepository(
        settings.model_repository,
        default_device=settings.device,
        activity=activity,
        default_max_queue_size=settings.default_max_queue_size,
    )
    dataplane = DataPlane(
        repository, model_control=settings.model_control_mode == "explicit", api_key=api_key
    )
    repository.caller = dataplane  # models that call other models (BLS) go through it
    explicit = settings.model_control_mode == "explicit"
    if settings.load_models and not explicit:
        raise ValueError("--load-model needs --model-control-mode explicit (otherwise all load)")
    await (repository.load_startup(settings.load_models) if explicit else repository.load_all())
    release_free_memory()

    frontend = HttpFrontend(dataplane, extra=_v1_handler(dataplane))
    http = HttpServer(
        frontend.handle,
        render_error,
        settings.max_body_bytes,
        settings.http_limits,
        on_response=busy_poll.touch,
        on_refused=dataplane.record_refused,
    )
    await http.start(settings.host, settings.http_port)
    log.info("HTTP on http://%s:%d", settings.host, http.port)
    extra_servers: list[Any] = []
    if settings.grpc_port is not None:
        extra_servers.append(await _start_grpc(dataplane, settings, settings.grpc_port))
    if settings.metrics_port is not None:
        extra_servers.append(await _start_metrics(dataplane, settings, settings.metrics_port))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def request_stop(signum: int) -> None:
        log.info("received %s: draining", signal.Signals(signum).name)
        dataplane.stopping = True
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    dataplane.started = True
    if started is not None:
        started.set()
    try:
        await stop.wait()
        await http.stop()
    finally:
        dataplane.stopping = True
        for server in extra_servers:
            await server.stop()
        await repository.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("stopped")


def release_free_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere a
    no-op). Loading leaves them behind: parsed model files, weights copied then packed, each
    freed once its session is built, spread over the heaps of the threads that loaded the
    models concurrently; glibc keeps them mapped until told otherwise (measured on the example
    repository: 20 to 40 MiB of resident memory)."""
    import ctypes

    # The process's own symbols: libc is loaded already, no need to look for its file.
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)


def _v1_handler(dataplane: DataPlane) -> Any:
    """TF Serving's REST routes, then OpenAI's: both live under /v1."""
    from accelserve.frontends.tfserving import TFServingFrontend

    return TFServingFrontend(dataplane, fallback=_openai_handler(dataplane))


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
        from accelserve.frontends.metrics import start_metrics_server
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
