"""``accelserve bench``: a perf_analyzer-style load generator for any KServe V2 server.

    accelserve bench -m simple -u 127.0.0.1:8000 --concurrency 1:64:x2 --duration 10
    accelserve bench -m simple -i grpc -u 127.0.0.1:8001 --request-rate 500,1000 --csv out.csv

Progress goes to stderr, the table to stdout. Exit status: 0 when every request succeeded,
1 when some failed (they are in the table, the CSV and a summary on stderr), 2 on a usage or
setup error (unreachable server, unknown model, inputs the server rejects).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING

from accelserve.errors import AccelServeError
from accelserve.tools.bench.sweep import parse_sweep

# Heavy modules (numpy, httptools) are imported in run(): `accelserve --help` stays fast.
if TYPE_CHECKING:
    from accelserve.tools.bench.bench import BenchOutcome, BenchSettings
    from accelserve.tools.bench.runner import StepResult

COUNTING = (
    "Counting: each step awaits its warm-up, snapshots /stats, then counts every request it "
    "issues in its window and awaits them all before the second snapshot; so ok+failed equals "
    "the server's success+fail delta ('srv reqs', marked '!' when not: another client, or a "
    "request that never reached the server). Latencies are over successful requests."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Load-test a KServe V2 server (accelserve, Triton...) over HTTP or gRPC."
    parser.epilog = COUNTING
    g = parser.add_argument_group("target")
    g.add_argument("-m", "--model", required=True, help="model name")
    g.add_argument("-x", "--model-version", default="", help="model version (default: server's)")
    g.add_argument(
        "-u",
        "--url",
        default="",
        help="host:port (default 127.0.0.1:8000 for http, :8001 for grpc)",
    )
    g.add_argument("-i", "--protocol", choices=("http", "grpc"), default="http")
    g.add_argument(
        "--http-format",
        choices=("binary", "json"),
        default="binary",
        help="binary tensor data extension (default, as tritonclient) or plain V2 JSON",
    )
    g = parser.add_argument_group("load")
    load = g.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency",
        default=None,
        help="concurrent clients: 16, 1,16,64, 1:64:x2 (geometric) or 8:64:8 (default 1)",
    )
    load.add_argument(
        "--request-rate",
        default=None,
        help="fixed rate sweep in requests/s, same syntax (open loop: sends on schedule)",
    )
    g.add_argument("--poisson", action="store_true", help="Poisson arrivals at --request-rate")
    g.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per step (10)")
    g.add_argument("-n", "--requests", type=int, default=None, help="requests per step instead")
    g.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per step (1)")
    g.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, s (30)")
    g = parser.add_argument_group("inputs")
    g.add_argument("-b", "--batch-size", type=int, default=1)
    g.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:d1,d2",
        help="shape of an input without the batch dim (variable dims, optional inputs)",
    )
    g.add_argument(
        "--input-data",
        default="random",
        help='"random" (default), "zeros", or a JSON file {"data": [{NAME: values}, ...]}',
    )
    g.add_argument("--input-sets", type=int, default=16, help="distinct random inputs (16)")
    g.add_argument("--string-length", type=int, default=16, help="BYTES element length (16)")
    g.add_argument("--seed", type=int, default=0)
    g = parser.add_argument_group("output")
    g.add_argument("--csv", default=None, metavar="PATH", help="write one row per step")
    g.add_argument("--png", default=None, metavar="PATH", help="throughput/latency chart")
    g.add_argument("--no-server-stats", action="store_true", help="do not read /stats")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def settings_from_args(args: argparse.Namespace) -> BenchSettings:
    from accelserve.tools.bench.bench import BenchSettings
    from accelserve.tools.bench.inputs import parse_shape_option

    concurrency = rates = None
    if args.request_rate is not None:
        rates = parse_sweep(args.request_rate, integer=False, what="--request-rate")
    else:
        concurrency = [int(c) for c in parse_sweep(args.concurrency or "1")]
    shapes = dict(parse_shape_option(s) for s in args.shape)
    return BenchSettings(
        url=args.url,
        model=args.model,
        version=args.model_version,
        protocol=args.protocol,
        http_format=args.http_format,
        concurrency=concurrency,
        request_rates=rates,
        poisson=args.poisson,
        duration_s=args.duration,
        requests=args.requests,
        warmup_s=args.warmup,
        timeout_s=args.timeout,
        batch_size=args.batch_size,
        shapes=shapes,
        input_data=args.input_data,
        input_sets=args.input_sets,
        string_length=args.string_length,
        seed=args.seed,
        server_stats=not args.no_server_stats,
    )


def _header(settings: BenchSettings, outcome: BenchOutcome) -> str:
    per = f"{settings.requests} requests" if settings.requests else f"{settings.duration_s:g} s"
    return (
        f"model {outcome.info.name!r} at {outcome.target}, batch {settings.batch_size}, "
        f"{per} per step after {settings.warmup_s:g} s warm-up"
    )


def _failures(steps: list[StepResult]) -> list[str]:
    lines = []
    for r in steps:
        for text, n in r.errors.items():
            lines.append(f"  {r.mode} {r.level:g}: {n} x {text}")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
        settings.validate()
    except ValueError as exc:
        print(f"accelserve bench: {exc}", file=sys.stderr)
        return 2
    from accelserve.tools.bench.bench import run_bench
    from accelserve.tools.bench.runner import Progress

    progress = Progress(None if args.quiet else sys.stderr)
    try:
        outcome = run_bench(settings, progress)
    except (AccelServeError, ValueError) as exc:
        print(f"accelserve bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelserve bench: interrupted", file=sys.stderr)
        return 130
    from accelserve.tools.bench import report

    print(_header(settings, outcome))
    print(report.table(outcome.steps))
    footer = "ok+failed: every request issued in a step's measured window, all awaited"
    if any(r.server is not None for r in outcome.steps):
        footer += "; srv reqs: the server's success+fail delta (/stats) over the same window"
    print(footer)
    for note in outcome.notes:
        print(f"note: {note}")
    if any(r.counts_match is False for r in outcome.steps):
        print("note: '!' marks steps whose server count differs from ours (see --help)")
    if args.csv:
        report.write_csv(args.csv, outcome.steps)
    if args.png:
        report.write_png(args.png, outcome.steps, f"{outcome.info.name} @ {outcome.target}")
    failures = _failures(outcome.steps)
    if failures:
        total = sum(r.failed for r in outcome.steps)
        print(f"accelserve bench: {total} request(s) failed:", file=sys.stderr)
        print("\n".join(failures), file=sys.stderr)
        return 1
    if any(r.ok == 0 or math.isnan(r.latency.p50) for r in outcome.steps):
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="accelserve bench")
    add_arguments(parser)
    return run(parser.parse_args(argv))
