"""Builds the example model repository's model files at set-up time (no opaque binaries in git).

``simple``: Triton's classic example. INPUT0, INPUT1 INT32 [16]; OUTPUT0 = INPUT0 + INPUT1,
OUTPUT1 = INPUT0 - INPUT1; batches up to 8. Written as a two-node ONNX graph.
``linear``: the seed's y = xW + b (2x2), a native model executed with accelserve.kernels.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def build_simple(model_dir: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    batch_16: list[str | int | None] = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [
            helper.make_tensor_value_info("INPUT0", TensorProto.INT32, batch_16),
            helper.make_tensor_value_info("INPUT1", TensorProto.INT32, batch_16),
        ],
        [
            helper.make_tensor_value_info("OUTPUT0", TensorProto.INT32, batch_16),
            helper.make_tensor_value_info("OUTPUT1", TensorProto.INT32, batch_16),
        ],
    )
    model = helper.make_model(
        graph, producer_name="accelserve", opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8  # readable by every ONNX Runtime from 1.10 on
    onnx.checker.check_model(model)
    path = model_dir / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def build_linear(model_dir: Path) -> Path:
    """The seed's example: y = xW + b with a 2x2 W, a native model run by accelserve.kernels
    on whatever device its instance is placed on (``--device /device:GPU:0`` on a GPU host)."""
    import numpy as np

    from accelserve.backends.native_format import write_native_model

    return write_native_model(
        model_dir / "1",
        layers=[{"type": "linear", "weight": "W", "bias": "b", "activation": None}],
        weights={
            "W": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
            "b": np.array([0.5, -0.5], np.float32),
        },
        input_spec={"name": "INPUT0", "datatype": "FP32", "dims": [2]},
        output_spec="OUTPUT0",
    )


def _build_minilm(model_dir: Path) -> Path:
    # torch and transformers are imported only when a minilm entry is built
    from accelserve.tools.examples.minilm import build_minilm

    return build_minilm(model_dir)


# model directory name -> builder; a builder runs only when its model directory exists
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "simple": build_simple,
    "linear": build_linear,
    **dict.fromkeys(
        ("minilm", "minilm_tokenizer", "minilm_transformer", "minilm_head"), _build_minilm
    ),
}


def prepare(repository: Path, force: bool = False) -> list[Path]:
    """Build every example model whose directory is in ``repository`` and whose files are
    missing (or all of them with ``force``)."""
    built = []
    for name, builder in BUILDERS.items():
        model_dir = repository / name
        if not model_dir.is_dir():
            continue
        if force or not any(p.is_dir() and p.name.isdigit() for p in model_dir.iterdir()):
            built.append(builder(model_dir))
    return built


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", nargs="?", default="examples/model_repository")
    parser.add_argument("--force", action="store_true", help="rebuild existing files")
    parser.add_argument(
        "--no-optimize",
        action="store_true",
        help="skip the recorded optimization recipes (optimize_recipe.json): serve the originals",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from accelserve.errors import AccelServeError
    from accelserve.tools.examples.optimized import optimize_examples

    repository = Path(args.repository)
    for path in prepare(repository, force=args.force):
        print(f"built {path}")
    if not args.no_optimize:
        try:
            optimize_examples(repository, args.force, sys.stdout)
        except (AccelServeError, ValueError) as exc:  # a bad recipe: a clear line, no traceback
            print(f"accelserve prepare-examples: {exc}", file=sys.stderr)
            return 2
    return 0
