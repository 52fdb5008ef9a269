"""One benchmark run from settings: read the model, make inputs, probe, sweep the levels.

Used by the CLI (``accelserve bench``) and directly by benchmark scripts::

    settings = BenchSettings(url="127.0.0.1:8000", model="simple", concurrency=[1, 16, 64])
    outcome = run_bench(settings)          # or: await bench(settings) inside a loop
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from accelserve.tools.bench.inputs import (
    ModelInfo,
    generate,
    load_json_data,
    resolve_shapes,
)
from accelserve.tools.bench.runner import LoadSpec, Progress, Runner, StepResult
from accelserve.tools.bench.transport import HttpTransport, Transport, split_url

T = TypeVar("T")


@dataclass
class BenchSettings:
    url: str = ""  # host:port; empty: 127.0.0.1 and the protocol's default port
    model: str = ""
    version: str = ""
    protocol: str = "http"  # "http" or "grpc"
    http_format: str = "binary"  # "binary" (Triton's extension) or "json"
    concurrency: Sequence[int] | None = None
    request_rates: Sequence[float] | None = None
    poisson: bool = False
    duration_s: float | None = 10.0
    requests: int | None = None
    warmup_s: float = 1.0
    timeout_s: float = 30.0
    batch_size: int = 1
    shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    input_data: str = "random"  # "random", "zeros" or a JSON file path
    input_sets: int = 16
    string_length: int = 16
    seed: int = 0
    server_stats: bool = True

    def validate(self) -> None:
        if not self.model:
            raise ValueError("--model is required")
        if self.protocol not in ("http", "grpc"):
            raise ValueError(f"--protocol must be 'http' or 'grpc', got {self.protocol!r}")
        if self.http_format not in ("binary", "json"):
            raise ValueError(f"--http-format must be 'binary' or 'json', got {self.http_format!r}")
        if (self.concurrency is None) == (self.request_rates is None):
            raise ValueError("give exactly one of --concurrency and --request-rate")
        levels = list(self.concurrency or self.request_rates or ())
        if not levels or any(not x > 0 for x in levels):
            raise ValueError(f"load levels must be positive, got {levels}")
        if self.requests is not None:
            if self.requests < 1:
                raise ValueError(f"--requests must be >= 1, got {self.requests}")
        elif self.duration_s is None or not self.duration_s > 0:
            raise ValueError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.warmup_s < 0:
            raise ValueError(f"--warmup must be >= 0 seconds, got {self.warmup_s}")
        if not self.timeout_s > 0:
            raise ValueError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        if self.input_sets < 1:
            raise ValueError(f"--input-sets must be >= 1, got {self.input_sets}")


@dataclass
class BenchOutcome:
    info: ModelInfo
    target: str
    steps: list[StepResult]
    notes: list[str]


def make_transport(settings: BenchSettings) -> Transport:
    default_port = 8001 if settings.protocol == "grpc" else 8000
    scheme, host, port = split_url(settings.url or "127.0.0.1", default_port)
    if scheme and scheme not in ("http", "grpc"):
        raise ValueError(f"--url scheme must be http:// or grpc://, got {scheme}://")
    if scheme and scheme != settings.protocol:
        raise ValueError(f"--url says {scheme}:// but --protocol is {settings.protocol}")
    if settings.protocol == "grpc":
        from accelserve.tools.bench.grpc_transport import GrpcTransport

        return GrpcTransport(
            host, port, settings.model, settings.version, timeout=settings.timeout_s
        )
    return HttpTransport(
        host,
        port,
        settings.model,
        settings.version,
        binary=settings.http_format == "binary",
        timeout=settings.timeout_s,
    )


async def bench(
    settings: BenchSettings,
    progress: Progress | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    transport: Transport | None = None,
) -> BenchOutcome:
    """``transport``: one the caller built (a benchmark's multi-connection client, say);
    by default the one ``settings`` describe."""
    settings.validate()
    transport = transport or make_transport(settings)
    await transport.open()
    try:
        metadata = await transport.metadata()
        config = await transport.config()
        info = ModelInfo.from_server(metadata, config)
        notes = []
        if config is None:
            notes.append("the server has no /config: batch limit and optional inputs unknown")
        shapes = resolve_shapes(info, settings.batch_size, settings.shapes)
        if settings.input_data in ("random", "zeros"):
            tensors = generate(
                info,
                shapes,
                settings.input_data,
                sets=settings.input_sets,
                seed=settings.seed,
                string_length=settings.string_length,
            )
        else:
            tensors = load_json_data(settings.input_data, info, shapes)
        transport.prepare(info, tensors)
        await transport.probe()
        spec = LoadSpec(
            duration_s=settings.duration_s,
            requests=settings.requests,
            warmup_s=settings.warmup_s,
            batch_size=settings.batch_size,
            poisson=settings.poisson,
            seed=settings.seed,
        )
        runner = Runner(
            transport,
            settings.model,
            settings.version,
            len(tensors),
            spec,
            settings.server_stats,
            progress,
        )
        if settings.concurrency is not None:
            steps = await runner.run(
                "concurrency", [float(c) for c in settings.concurrency], on_step
            )
        else:
            steps = await runner.run(
                "rate", [float(r) for r in settings.request_rates or ()], on_step
            )
        if runner.stats_note:
            notes.append(runner.stats_note)
        return BenchOutcome(info, transport.description, steps, notes)
    finally:
        await transport.close()
        await asyncio.sleep(0)  # let closed sockets' callbacks run before the loop ends


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed (a leaner loop leaves more CPU to the server)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def run_bench(
    settings: BenchSettings,
    progress: Progress | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    transport: Transport | None = None,
) -> BenchOutcome:
    return run_async(bench(settings, progress, on_step, transport))
