"""``accelserve advise REPO/MODEL``: choose the device and batching config by measurement.

    accelserve advise models/simple --p99-ms 5
    accelserve advise models/simple --devices cpu,cuda:0 --batch-sizes 1,8,32 --instances 1,2 \\
        --duration 5 --csv advise.csv --png advise.png --write-config

For every candidate (device x batch size x instance count) the model is loaded through the
repository, the scheduler and the data plane exactly as ``accelserve serve`` loads it, with its
``config.pbtxt`` overridden (``dynamic_batching.preferred_batch_size`` = the batch size,
``instance_group`` = count on the device), and driven in process by ``batch x instances``
closed-loop clients (the ``accelserve bench`` runner) sending synthetic inputs made from the
model's inputs. What is measured is the server path without the network: queueing, batching,
input checks and the backend on the device.

The recommendation is the highest-throughput candidate with no failed request whose p99 latency
is within ``--p99-ms``; when none is, the lowest-p99 candidate is shown, flagged. Exit status: 0
with a recommendation, 1 when no candidate meets the objective (or none ran without failures),
2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelserve.errors import AccelServeError
from accelserve.tools.advisor.candidates import (
    DEFAULT_BATCH_SIZES,
    Candidate,
    Measurement,
    Target,
    apply_candidate,
    recommend,
)

# numpy, protobuf and the scheduler are imported in run(): `accelserve --help` stays fast.
if TYPE_CHECKING:
    import numpy as np

    from accelserve.devices import Device
    from accelserve.tools.bench.runner import Progress

# -- arguments -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Measure a model on each device, batch size and instance count and "
    parser.description += "recommend the config meeting a p99 latency objective."
    parser.epilog = "Exit status: 0 recommended, 1 no candidate meets --p99-ms, 2 usage error."
    parser.add_argument("model", metavar="REPO/MODEL", help="the model's directory")
    parser.add_argument("--p99-ms", type=float, default=None, help="p99 latency objective, ms")
    parser.add_argument("--devices", default="", help="e.g. cpu,cuda:0 (default: all present)")
    parser.add_argument(
        "--batch-sizes",
        default="",
        help="preferred batch sizes to try (default 1,8,32 capped at max_batch_size)",
    )
    parser.add_argument("--instances", default="1,2", help="instance counts to try (1,2)")
    parser.add_argument("--request-rows", type=int, default=1, help="rows per request (1)")
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds each (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds each (1)")
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:d1,d2",
        help="shape of an input with variable dims, without the batch dim",
    )
    parser.add_argument("--csv", default=None, metavar="PATH", help="write one row per candidate")
    parser.add_argument("--png", default=None, metavar="PATH", help="throughput/p99 chart")
    parser.add_argument(
        "--write-config",
        action="store_true",
        help="write the recommended fields into the model's config.pbtxt",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def parse_counts(text: str, what: str) -> list[int]:
    """``1,8,32`` -> [1, 8, 32]: positive integers, in the order given, without duplicates."""
    values: list[int] = []
    for item in text.split(","):
        try:
            value = int(item.strip())
        except ValueError:
            raise ValueError(
                f"{what}: expected comma-separated positive integers; received {text!r}"
            ) from None
        if value < 1:
            raise ValueError(f"{what}: expected values >= 1; received {value}")
        if value not in values:
            values.append(value)
    return values


def choose_devices(text: str) -> list[Device]:
    from accelserve.devices import discover, parse_device, resolve_device

    if not text.strip():  # virtual host devices (cpu:1, ...) are the same cores: cpu:0 only
        return [i.device for i in discover() if i.device.kind != "cpu" or i.device.index == 0]
    devices: list[Device] = []
    for item in text.split(","):
        device = resolve_device(parse_device(item))  # DeviceError names what is present
        if device not in devices:
            devices.append(device)
    return devices


def batch_sizes(text: str, max_batch_size: int, request_rows: int) -> list[int]:
    if max_batch_size == 0:
        if text and parse_counts(text, "--batch-sizes") != [1]:
            raise ValueError(
                f"--batch-sizes: the model does not batch (max_batch_size 0): expected 1; "
                f"received {text!r}"
            )
        return [1]
    if not text:
        capped = {min(b, max_batch_size) for b in DEFAULT_BATCH_SIZES}
        return sorted(b for b in capped if b >= request_rows) or [max_batch_size]
    sizes = parse_counts(text, "--batch-sizes")
    for size in sizes:
        if not request_rows <= size <= max_batch_size:
            raise ValueError(
                f"--batch-sizes: expected values in {request_rows}..{max_batch_size} "
                f"(--request-rows..max_batch_size); received {size}"
            )
    return sizes


# -- the model and its candidate configs -------------------------------------------------


def inspect_model(model_dir: Path, device: Device) -> Target:
    """Read the config and complete it by loading the model once on ``device``."""
    from accelserve.config import (
        input_specs,
        is_ensemble,
        parse_config,
        read_config,
        select_versions,
    )
    from accelserve.errors import ConfigError
    from accelserve.repository import load_backend
    from accelserve.tools.bench.inputs import InputSpec, ModelInfo

    if not model_dir.is_dir():
        raise ConfigError(f"model directory '{model_dir}': expected a directory; it does not exist")
    config = read_config(model_dir)
    if is_ensemble(config):
        raise ConfigError(f"model '{config.name}': an ensemble has no instances to place")
    version = select_versions(model_dir, config)[-1]
    try:
        load_backend(model_dir / version, config, device).unload()
    except AccelServeError:
        raise
    except Exception as exc:  # a broken model file: one clear line, no traceback
        raise ConfigError(
            f"model '{config.name}' version {version} failed to load on {device}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    path = model_dir / "config.pbtxt"
    original = parse_config(path.read_text(), str(path)) if path.is_file() else None
    inputs = tuple(InputSpec(s.name, s.datatype, s.dims, s.optional) for s in input_specs(config))
    outputs = tuple(o.name for o in config.output)
    info = ModelInfo(config.name, config.max_batch_size, inputs, outputs)
    return Target(model_dir, config, original, info)


# -- measuring -----------------------------------------------------------------------------


async def measure(
    target: Target,
    candidate: Candidate,
    tensors: Sequence[Mapping[str, np.ndarray]],
    duration_s: float,
    warmup_s: float,
    progress: Progress,
) -> Measurement:
    """Load the model with the candidate's config in a scratch repository and drive it."""
    from google.protobuf import text_format

    from accelserve.dataplane import DataPlane
    from accelserve.model import READY
    from accelserve.repository import ModelRepository
    from accelserve.tools.bench.inprocess import InProcessTransport
    from accelserve.tools.bench.runner import LoadSpec, Runner

    name = target.config.name
    config = apply_candidate(target.config, candidate)
    with tempfile.TemporaryDirectory(prefix="accelserve-advise-") as scratch:
        model_dir = Path(scratch) / name
        model_dir.mkdir()
        for entry in target.model_dir.iterdir():  # versions and side files, as they are
            if entry.name not in ("config.pbtxt", "config.pbtxt.bak"):
                (model_dir / entry.name).symlink_to(entry.resolve())
        (model_dir / "config.pbtxt").write_text(text_format.MessageToString(config))
        repository = ModelRepository(scratch, default_device=str(candidate.device))
        try:
            record = await repository.load(name)
            if record.state != READY:
                return Measurement(candidate, error=f"load failed: {record.reason}")
            transport = InProcessTransport(DataPlane(repository), name)
            transport.prepare(target.info, tensors)
            await transport.probe()
            spec = LoadSpec(duration_s=duration_s, warmup_s=warmup_s, batch_size=1)
            runner = Runner(transport, name, "", len(tensors), spec, progress=progress)
            results = await runner.run("concurrency", [candidate.concurrency])
            return Measurement(candidate, results[0])
        except ValueError as exc:
            return Measurement(candidate, error=str(exc)[:200])
        finally:
            await repository.stop()


async def advise(
    target: Target,
    candidates: Sequence[Candidate],
    shapes: Mapping[str, Sequence[int]],
    duration_s: float,
    warmup_s: float,
    progress: Progress,
) -> list[Measurement]:
    from accelserve.tools.bench.inputs import generate, resolve_shapes

    rows = max(1, candidates[0].request_rows) if candidates else 1
    full_shapes = resolve_shapes(target.info, rows, shapes)
    tensors = generate(target.info, full_shapes, "random", sets=16)
    out = []
    for k, candidate in enumerate(candidates, 1):
        progress.show(
            f"[{k}/{len(candidates)}] {candidate.label}, concurrency {candidate.concurrency}",
            final=True,
        )
        m = await measure(target, candidate, tensors, duration_s, warmup_s, progress)
        if m.error:
            progress.show(f"[{k}/{len(candidates)}] {m.error}", final=True)
        out.append(m)
    return out


# -- the command ---------------------------------------------------------------------------


def _plan(args: argparse.Namespace) -> tuple[Target, list[Candidate], dict[str, Any]]:
    from accelserve.tools.bench.inputs import parse_shape_option

    if args.p99_ms is not None and not args.p99_ms > 0:
        raise ValueError(f"--p99-ms: expected a latency > 0 ms; received {args.p99_ms:g}")
    if not args.duration > 0 or args.warmup < 0:
        raise ValueError(
            f"--duration must be > 0 and --warmup >= 0; received {args.duration:g}, {args.warmup:g}"
        )
    if args.request_rows < 1:
        raise ValueError(f"--request-rows: expected >= 1; received {args.request_rows}")
    devices = choose_devices(args.devices)
    instances = parse_counts(args.instances, "--instances")
    shapes = dict(parse_shape_option(s) for s in args.shape)
    target = inspect_model(Path(args.model), devices[0])
    mbs = target.config.max_batch_size
    if mbs == 0 and args.request_rows != 1:
        raise ValueError("--request-rows: the model does not batch (max_batch_size 0)")
    sizes = batch_sizes(args.batch_sizes, mbs, args.request_rows)
    rows = args.request_rows if mbs > 0 else 0
    candidates = [
        Candidate(d, b, n, rows) for d in devices for b in sizes for n in sorted(instances)
    ]
    return target, candidates, shapes


def run(args: argparse.Namespace) -> int:
    from accelserve.tools.advisor import report
    from accelserve.tools.bench.runner import Progress

    progress = Progress(None if args.quiet else sys.stderr)
    try:
        target, candidates, shapes = _plan(args)
        measurements = asyncio.run(
            advise(target, candidates, shapes, args.duration, args.warmup, progress)
        )
    except (AccelServeError, ValueError) as exc:
        print(f"accelserve advise: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelserve advise: interrupted", file=sys.stderr)
        return 130
    choice, met = recommend(measurements, args.p99_ms)
    print(report.header(target.config.name, args))
    print(report.table(measurements, choice, args.p99_ms))
    if args.csv:
        report.write_csv(args.csv, measurements, choice, args.p99_ms)
    if args.png:
        note = report.write_png(args.png, measurements, choice, args.p99_ms, target.config.name)
        if note:
            print(f"note: {note}", file=sys.stderr)
    for m in measurements:
        if m.result is not None and m.result.errors:
            for text, n in m.result.errors.items():
                print(f"{m.candidate.label}: {n} x {text}", file=sys.stderr)
    if choice is None:
        print("no candidate ran without failures: no recommendation")
        return 1
    print(report.verdict(choice, met, args.p99_ms))
    fields = report.recommended_fields(target.config, choice.candidate)
    if not met:
        if args.write_config:
            print("not writing a config: no candidate meets the objective")
        return 1
    if args.write_config:
        path = report.write_config(target, choice.candidate)
        print(f"wrote {path} (previous file kept as config.pbtxt.bak):")
    else:
        print("recommended config.pbtxt fields (write them with --write-config):")
    print(report.config_text(fields), end="")
    if choice.candidate.device.kind == "tpu":
        print(f"serve with --device {choice.candidate.device} (instance_group KIND_MODEL)")
    return 0
