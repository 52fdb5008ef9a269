"""``accelserve export KIND ...``: ``sentence-transformer`` (a pipeline from a
sentence-transformers model) and ``onnx``/``savedmodel``/``pt2`` (a model file a user already
has, copied into a new version with a ``config.pbtxt`` read from the file, then loaded and run
once on random data within that config)."""

from __future__ import annotations

import argparse
import sys

from accelserve.errors import AccelServeError
from accelserve.tools.export import sentence_transformer

FILE_KINDS = {
    "onnx": "an ONNX model file (.onnx)",
    "savedmodel": "a TensorFlow SavedModel directory",
    "pt2": "a torch.export program file (.pt2)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    sentence_transformer.add_kind(kinds)
    for kind, what in FILE_KINDS.items():
        sub = kinds.add_parser(kind, help=f"{what} -> a checked model-repository version")
        sub.add_argument("path", help=what)
        sub.add_argument("destination", help="REPO/NAME: the model repository and the model name")
        sub.add_argument(
            "--max-batch-size",
            type=int,
            default=None,
            help="batch up to N (0: whole shapes, no batching); default: batching when every "
            "tensor of the file has a dynamic first dimension",
        )
        sub.add_argument("--version", type=int, default=None, help="default: the next free one")
        sub.add_argument("--device", default="cpu", help="where the check runs (default cpu)")


def run(args: argparse.Namespace) -> int:
    if args.kind == "sentence-transformer":
        return sentence_transformer.run(args)
    from accelserve.tools.export.api import export_file

    try:
        export_file(
            args.path,
            args.destination,
            format=args.kind,
            max_batch_size=args.max_batch_size,
            version=args.version,
            device=args.device,
            progress=sys.stderr,
        )
    except AccelServeError as exc:
        print(f"accelserve export {args.kind}: {exc}", file=sys.stderr)
        return 2
    return 0
