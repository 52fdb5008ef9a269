"""The ``accelserve optimize`` command line.

    accelserve optimize models/minilm_transformer --text-file corpus.txt --png opt.png --apply
    accelserve optimize models/mlp --candidates int8-dynamic-matmul,fp16 --tolerance max_rel=0.02
    accelserve optimize models/minilm_transformer --serve-version 1     # back to the original

Exit status: 0 a candidate was chosen (or --serve-version done), 1 none passes and is faster
(the original stays), 2 a usage or setup error.
"""

from __future__ import annotations

import argparse
import sys

from accelserve.errors import AccelServeError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Build optimized candidates of an ONNX model (graph optimization, FP16, INT8 dynamic and "
        "static, sensitive layers kept precise) or a PyTorch one (torch.compile, BF16 autocast, "
        "weight-only INT8) or a TensorFlow one (XLA), check each against the original on held-out "
        "data, measure it through the scheduler and write the fastest accurate one as a new "
        "version."
    )
    parser.epilog = "Exit status: 0 chosen, 1 none passes and is faster, 2 usage error."
    parser.add_argument("model", metavar="REPO/MODEL", help="the model's directory")
    data = parser.add_mutually_exclusive_group()
    data.add_argument(
        "--text-file",
        default=None,
        metavar="PATH",
        help="texts, one per line, fed through the ensemble containing the model",
    )
    data.add_argument(
        "--input-data",
        default=None,
        metavar="PATH",
        help="samples in `accelserve bench --input-data` JSON format",
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        default=256,
        help="samples read (half calibrate, half held out; default 256)",
    )
    parser.add_argument(
        "--candidates",
        default="",
        help="comma-separated: ort-graph,fp16,int8-dynamic-matmul,"
        "int8-dynamic-all,int8-static; PyTorch: compile,bf16-autocast,compile-bf16,"
        "int8-weight,int8-weight-compile; TensorFlow: xla; with --device cuda:N also "
        "cuda-fp16,cuda-graph,trt-fp16,trt-int8 (ONNX), compile-cuda-graphs (PyTorch) "
        "(default all that apply)",
    )
    parser.add_argument(
        "--tolerance",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="cosine (mean, 0.995), cosine_min (0.99), max_rel (0.01 for "
        "outputs that are not embeddings), max_abs (none)",
    )
    parser.add_argument(
        "--no-search",
        action="store_true",
        help="do not search for layers to keep precise when INT8 fails",
    )
    parser.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME:d1,d2",
        help="shape of an input with variable dims (random data), no batch dim",
    )
    parser.add_argument(
        "-d", "--duration", type=float, default=3.0, help="seconds of measurement per candidate (3)"
    )
    parser.add_argument(
        "--search-reserve",
        type=float,
        default=0.25,
        help="share of each tolerance's slack the layer search keeps unused, so its result "
        "holds on unseen data (0.25: cosine_min 0.99 -> the search aims at 0.9925)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="speed rounds, interleaved over the original and the candidates; medians (2)",
    )
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds (1)")
    parser.add_argument(
        "--batch-size", type=int, default=0, help="batch size to measure at (default: the config's)"
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=0,
        help="instance count to measure with (default: the config's)",
    )
    parser.add_argument(
        "--min-gain",
        type=float,
        default=1.05,
        help="speed-up over the original a new version needs (1.05; 0: the fastest "
        "passing candidate however fast)",
    )
    parser.add_argument("--csv", default=None, metavar="PATH", help="one row per candidate")
    parser.add_argument("--png", default=None, metavar="PATH", help="speed against accuracy")
    parser.add_argument("--dry-run", action="store_true", help="write no version")
    parser.add_argument(
        "--apply",
        action="store_true",
        help="serve the chosen version (version policy); the original stays",
    )
    parser.add_argument(
        "--serve-version",
        type=int,
        default=None,
        metavar="N",
        help="only pin the served version to N (e.g. back to the original)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="device to optimize for (cpu; cuda:N adds the GPU candidates: CUDA/TensorRT "
        "execution providers at FP16/INT8, CUDA graphs)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from accelserve.tools.bench.inputs import parse_shape_option
    from accelserve.tools.optimize import apply as apply_mod
    from accelserve.tools.optimize import report
    from accelserve.tools.optimize.optimize import optimize

    try:
        if args.serve_version is not None:
            model_dir = Path(args.model)
            if not model_dir.is_dir():
                raise ValueError(f"model directory '{model_dir}': it does not exist")
            path = apply_mod.serve_version(model_dir, args.serve_version)
            print(f"{path}: serving version {args.serve_version}")
            return 0
        if args.apply and args.dry_run:
            raise ValueError("--apply and --dry-run: expected one of them; received both")
        if not args.min_gain >= 0:
            raise ValueError(f"--min-gain: expected >= 0; received {args.min_gain:g}")
        if args.batch_size < 0 or args.instances < 0:
            raise ValueError("--batch-size and --instances: expected >= 1 (0: the config's)")
        result = optimize(
            args.model,
            text_file=args.text_file,
            input_data=args.input_data,
            candidates=args.candidates,
            tolerances=args.tolerance,
            shapes=dict(parse_shape_option(s) for s in args.shape),
            max_samples=args.max_samples,
            duration_s=args.duration,
            warmup_s=args.warmup,
            batch_size=args.batch_size,
            instances=args.instances,
            search=not args.no_search,
            repeats=args.repeats,
            search_reserve=args.search_reserve,
            min_gain=args.min_gain,
            write=not args.dry_run,
            apply=args.apply,
            stream=None if args.quiet else sys.stderr,
            device=args.device,
        )
    except (AccelServeError, ValueError) as exc:
        message = exc.message if isinstance(exc, AccelServeError) else str(exc)
        print(f"accelserve optimize: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("accelserve optimize: interrupted", file=sys.stderr)
        return 130
    print(f"model {result.model!r}; accuracy against the original on {result.data}")
    print(report.table(result.rows, result.original))
    if args.csv:
        report.write_csv(args.csv, result.rows, result.original)
    if args.png:
        note = report.write_png(args.png, result.rows, result.original, result.model)
        if note:
            print(f"note: {note}", file=sys.stderr)
    if result.chosen is None:
        print("no candidate passes the tolerance and is faster: the original stays")
        return 1
    if result.version is not None:
        state = "served now" if args.apply else "not served (use --apply)"
        print(
            f"wrote version {result.version} ({result.chosen.label}), {state}; "
            f"served versions: {result.served}"
        )
    return 0
