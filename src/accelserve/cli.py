"""The ``accelserve`` command: serve, devices, and the tools of ``accelserve.tools`` (each
imported only when its subcommand runs)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from typing import Any

from accelserve.deploy import cli as ray_cli
from accelserve.frontends.busy_poll import DEFAULT_WINDOW_US
from accelserve.frontends.http_limits import DEFAULT_MAX_QUEUE_SIZE, HELP, HttpLimits

# subcommand -> (module with add_arguments(parser) and run(args) -> int, help text)
TOOLS: dict[str, tuple[str, str]] = {
    "bench": ("accelserve.tools.bench.cli", "load-test a KServe V2 server (accelserve or Triton)"),
    "export": (
        "accelserve.tools.export.cli",
        "turn a trained model or a model file into a model-repository entry",
    ),
    "advise": (
        "accelserve.tools.advisor.advise",
        "measure a model on each device and recommend a config",
    ),
    "optimize": (
        "accelserve.tools.optimize.cli",
        "find the fastest form of a model that stays accurate and write it as a version",
    ),
    "prepare-examples": ("accelserve.tools.examples.build", "build the example models' files"),
    "deploy": ("accelserve.deploy.cli", "write a deployment config (Ray Serve) for a repository"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accelserve", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model repository over HTTP and gRPC")
    serve.add_argument("--model-repository", "--model-store", required=True, help="repository path")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001, help="0 disables gRPC")
    serve.add_argument("--metrics-port", type=int, default=8002, help="0 disables /metrics")
    serve.add_argument(
        "--device", default="auto", help="default device, e.g. cpu, cuda:0, /device:GPU:0"
    )
    serve.add_argument("--model-control-mode", choices=["none", "explicit"], default="none")
    serve.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="explicit mode: a model to load at start-up (repeatable; '*' for all; none by "
        "default, as in Triton)",
    )
    serve.add_argument(
        "--api-key", default=None, help="key for model control (or ACCELSERVE_API_KEY)"
    )
    serve.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024)
    serve.add_argument(
        "--busy-poll-us",
        type=int,
        default=None,
        help="keep polling sockets this long after a response instead of sleeping: lower "
        f"latency at low load for some CPU (default {DEFAULT_WINDOW_US}; 0 disables; with "
        "--ray: the replicas' servers, default 0)",
    )
    for name, help_text in HELP.items():  # --http-max-url-bytes ... (frontends/http_limits.py)
        default = getattr(HttpLimits(), name)
        serve.add_argument(
            f"--http-{name.replace('_', '-')}",
            dest=f"http_{name}",
            type=type(default),
            default=default,
            help=f"{help_text} (default {default})",
        )
    serve.add_argument(
        "--default-max-queue-size",
        type=int,
        default=DEFAULT_MAX_QUEUE_SIZE,
        help="queued requests per model where its config sets no max_queue_size; beyond: 503 "
        f"with Retry-After (gRPC UNAVAILABLE); 0 unbounded (default {DEFAULT_MAX_QUEUE_SIZE})",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ray_cli.add_serve_arguments(serve)
    serve.set_defaults(handler=_serve)

    devices = commands.add_parser("devices", help="list the devices on this host")
    devices.add_argument("--json", action="store_true", help="print JSON")
    devices.add_argument(
        "--model-repository",
        default=None,
        help="also show where each model's instances would be placed (reads configs only)",
    )
    devices.add_argument(
        "--device", default="auto", help="default device for models without instance_group"
    )
    devices.set_defaults(handler=_devices)

    for name, (module, help_text) in TOOLS.items():
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(tool=module)
        _tool_arguments(module, sub)

    args = parser.parse_args(argv)
    if getattr(args, "missing", None):
        print(f"accelserve {args.command}: {args.missing} is not installed", file=sys.stderr)
        return 2
    if hasattr(args, "tool"):
        return int(importlib.import_module(args.tool).run(args))
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def _tool_arguments(module: str, parser: argparse.ArgumentParser) -> None:
    # A tool whose module is absent (an uninstalled extra) still shows in --help.
    try:
        importlib.import_module(module).add_arguments(parser)
    except ImportError:
        parser.set_defaults(missing=module)


def _serve(args: argparse.Namespace) -> int:
    from accelserve.errors import AccelServeError
    from accelserve.server import ServerSettings, run

    if args.ray is not None:
        return ray_cli.serve_on_ray(args)
    try:
        limits = HttpLimits(**{name: getattr(args, f"http_{name}") for name in HELP})
    except ValueError as exc:  # "<field>: expected ...": name the option as typed
        name, _, reason = str(exc).partition(":")
        print(f"accelserve serve: --http-{name.replace('_', '-')}:{reason}", file=sys.stderr)
        return 2
    if args.default_max_queue_size < 0:
        print(
            "accelserve serve: --default-max-queue-size: expected >= 0 (0: unbounded); "
            f"received {args.default_max_queue_size}",
            file=sys.stderr,
        )
        return 2
    settings = ServerSettings(
        model_repository=args.model_repository,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port or None,
        metrics_port=args.metrics_port or None,
        device=args.device,
        model_control_mode=args.model_control_mode,
        load_models=tuple(args.load_model),
        api_key=args.api_key,
        max_body_bytes=args.max_body_bytes,
        http_limits=limits,
        default_max_queue_size=args.default_max_queue_size,
        busy_poll_us=DEFAULT_WINDOW_US if args.busy_poll_us is None else args.busy_poll_us,
        log_level=args.log_level,
    )
    try:
        run(settings)
    except (ValueError, AccelServeError) as exc:  # bad settings: a clear line, no traceback
        print(f"accelserve serve: {exc}", file=sys.stderr)
        return 2
    return 0


def _devices(args: argparse.Namespace) -> int:
    from accelserve.devices import discover

    infos = [info.as_dict() for info in discover()]
    plan = None
    if args.model_repository:
        from accelserve.errors import AccelServeError
        from accelserve.repository import plan_placements

        try:
            plan = plan_placements(args.model_repository, args.device)
        except AccelServeError as exc:
            print(f"accelserve devices: {exc.message}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(infos if plan is None else {"devices": infos, "models": plan}, indent=2))
        return 0
    for info in infos:
        print(
            f"{info['device']:<8} {info['tensorflow_name']:<16} {info['name']}\n"
            f"         memory {_fmt(info['memory_bytes'], 'B')}, peak {_fmt(info['peak_flops'], 'FLOP/s')}, "
            f"bandwidth {_fmt(info['memory_bandwidth'], 'B/s')}"
        )
    if plan:
        print("\nplanned placement (from the configs; nothing is loaded):")
    for row in plan or []:
        if "error" in row:
            where = f"not placed: {row['error']}"
        elif row.get("ensemble"):
            where = "ensemble (runs on its steps' instances)"
        else:
            where = ", ".join(f"{row['model']}_{i} on {d}" for i, d in enumerate(row["devices"]))
        print(f"model {row['model']}: {where}")
    return 0


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "unknown"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if value >= scale:
            return f"{value / scale:.1f} {prefix}{unit}"
    return f"{value} {unit}"


if __name__ == "__main__":
    sys.exit(main())
