"""Model configuration: read a model directory's ``config.pbtxt`` and versions, complete the
config from the model file, render JSON.

The message definitions live in ``protocol/model_config.proto`` (Triton's field names and
numbers for the supported subset). ``text_format`` rejects any field outside that subset with
the line and column, which ``parse_config`` turns into a message naming the field.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from google.protobuf import json_format, text_format

from accelserve.errors import ConfigError
from accelserve.protocol.model_config_pb2 import DataType, ModelConfig
from accelserve.types import CONFIG_TO_V2, V2_TO_CONFIG, TensorSpec

# Triton enables dynamic batching with this max_batch_size when it completes a batching model.
DEFAULT_MAX_BATCH_SIZE = 4
_UNKNOWN_FIELD = re.compile(r'^(\d+):(\d+) : .*has no field named "([^"]+)"')


# A comment or a quoted string of the text format, left to right (a '#' in a string is text).
_COMMENT_OR_STRING = re.compile(r"#[^\n]*|\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'")
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
# What protobuf's Python unescaping understands (C escapes, octal, \x, \N{..}, \u, \U).
_ESCAPED = frozenset("\n\\'\"abfnrtv01234567xNuU")


def parse_config(text: str, source: str = "config.pbtxt") -> ModelConfig:
    _check_escapes(text, source)
    config = ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        message = str(exc)
        unknown = _UNKNOWN_FIELD.match(message)
        if unknown:
            line, _, field = unknown.groups()
            raise ConfigError(
                f"{source} line {line}: field '{field}' is not supported by accelserve"
            ) from None
        raise ConfigError(f"{source}: {message}") from None
    return config


def _check_escapes(text: str, source: str) -> None:
    """Reject an unknown escape in a string (e.g. "\\{"): protobuf's parser would keep it with
    a DeprecationWarning today (Python's unicode_escape codec), and Triton's C++ parser rejects
    it."""
    for token in _COMMENT_OR_STRING.finditer(text):
        if token.group().startswith("#"):
            continue
        for escape in _ESCAPE.finditer(token.group()):
            if escape.group(1) not in _ESCAPED:
                line = text.count("\n", 0, token.start()) + 1
                raise ConfigError(
                    f"{source} line {line}: invalid escape sequence {escape.group()!r} in the "
                    f"string {token.group()}; expected one of \\n \\t \\\\ \\\" \\' \\ooo \\xhh"
                )


def input_specs(config: ModelConfig) -> list[TensorSpec]:
    return [
        TensorSpec(
            name=i.name,
            datatype=_v2(i.data_type, f"input '{i.name}' data_type"),
            dims=tuple(i.dims),
            optional=i.optional,
            reshape=tuple(i.reshape.shape) if i.HasField("reshape") else None,
        )
        for i in config.input
    ]


def output_specs(config: ModelConfig) -> list[TensorSpec]:
    return [
        TensorSpec(
            name=o.name,
            datatype=_v2(o.data_type, f"output '{o.name}' data_type"),
            dims=tuple(o.dims),
            reshape=tuple(o.reshape.shape) if o.HasField("reshape") else None,
        )
        for o in config.output
    ]


def instance_count(config: ModelConfig, position: int) -> int:
    """How many instances ``instance_group[position]`` asks for (no count: one)."""
    count = config.instance_group[position].count or 1
    if count < 0:
        raise ConfigError(
            f"model '{config.name}' instance_group[{position}] count: expected >= 1; "
            f"received {count}"
        )
    return int(count)


def count_parameter(where: str, key: str, text: str | None) -> int:
    """A ``parameters`` value that must be an integer >= 0 (absent or empty: 0); ``where``
    names the model in the error (e.g. "model 'm'")."""
    stripped = (text or "").strip()
    if not stripped:
        return 0
    if not stripped.isdigit():
        raise ConfigError(f"{where} parameter '{key}': expected an integer >= 0; received {text!r}")
    return int(stripped)


def seconds_parameter(where: str, key: str, text: str | None, default: float) -> float:
    """A ``parameters`` value that must be a finite number of seconds > 0 (absent or empty:
    ``default``); ``where`` names the model in the error."""
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{where} parameter '{key}': expected seconds > 0; received {text!r}")
    return value


def _v2(data_type: int, what: str) -> str:
    name = DataType.Name(data_type)
    if name not in CONFIG_TO_V2:
        raise ConfigError(f"{what}: expected one of {', '.join(CONFIG_TO_V2)}; received {name}")
    return CONFIG_TO_V2[name]


def complete_config(
    config: ModelConfig,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
    file_max_batch_size: int | None,
) -> None:
    """Fill what the config leaves out from what the backend read in the model file, and check
    what it does say against the file. ``inputs``/``outputs`` dims exclude the batch dim when
    ``file_max_batch_size`` is not 0."""
    # file_max_batch_size: None = the file cannot tell, 0 = no batch dim, -1 = a dynamic batch
    # dim of unknown limit, N > 0 = batches up to N.
    batching_from_file = file_max_batch_size is not None and file_max_batch_size != 0
    if not config.input and not config.output and batching_from_file and config.max_batch_size == 0:
        limit = file_max_batch_size or 0
        config.max_batch_size = limit if limit > 0 else DEFAULT_MAX_BATCH_SIZE
        if not config.WhichOneof("scheduling_choice"):
            config.dynamic_batching.SetInParent()
    # The sequence batcher fills in control and state inputs; clients never send them.
    filled_in = {c.name for c in config.sequence_batching.control_input}
    filled_in |= {s.input_name for s in config.sequence_batching.state}
    state_outputs = {s.output_name for s in config.sequence_batching.state}
    if not config.input:
        for spec in inputs:
            if spec.name in filled_in:
                continue
            entry = config.input.add(name=spec.name, dims=list(spec.dims))
            entry.data_type = DataType.Value(V2_TO_CONFIG[spec.datatype])
    if not config.output:
        for spec in outputs:
            if spec.name in state_outputs:
                continue
            entry = config.output.add(name=spec.name, dims=list(spec.dims))
            entry.data_type = DataType.Value(V2_TO_CONFIG[spec.datatype])
    _check_against_file(config, "input", input_specs(config), inputs)
    _check_against_file(config, "output", output_specs(config), outputs)


def _check_against_file(
    config: ModelConfig, kind: str, declared: list[TensorSpec], found: list[TensorSpec]
) -> None:
    if not found:  # the backend cannot tell (e.g. TorchScript, Python models)
        return
    by_name = {s.name: s for s in found}
    for spec in declared:
        actual = by_name.get(spec.name)
        if actual is None:
            raise ConfigError(
                f"model '{config.name}': {kind} '{spec.name}' in the config is not in the model "
                f"file; the file has {', '.join(sorted(by_name))}"
            )
        if actual.datatype != spec.datatype:
            raise ConfigError(
                f"model '{config.name}': {kind} '{spec.name}' data_type: the model file has "
                f"{V2_TO_CONFIG[actual.datatype]}, the config says {V2_TO_CONFIG[spec.datatype]}"
            )
        if spec.reshape is None and not _dims_compatible(spec.dims, actual.dims):
            raise ConfigError(
                f"model '{config.name}': {kind} '{spec.name}' dims: the model file has "
                f"{list(actual.dims)}, the config says {list(spec.dims)}"
            )


def _dims_compatible(declared: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    if len(declared) != len(actual):
        return False
    return all(d == a or d == -1 or a == -1 for d, a in zip(declared, actual, strict=True))


# uint64/int64 fields that protobuf's JSON mapping renders as strings; Triton renders numbers.
_INT64_FIELDS = {
    "dims",
    "shape",
    "versions",
    "max_queue_delay_microseconds",
    "priority_levels",
    "default_priority_level",
    "default_timeout_microseconds",
    "model_version",
}


def config_to_json(config: ModelConfig) -> dict[str, Any]:
    """The model config in Triton's JSON form (``GET /v2/models/{m}/config``)."""
    data = json_format.MessageToDict(
        config, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    result: dict[str, Any] = _numbers(data)
    return result


def _numbers(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v, key) for v in value]
    if key in _INT64_FIELDS and isinstance(value, str):
        return int(value)
    return value


def validate_config(config: ModelConfig) -> None:
    """Checks that do not need the model file."""
    if config.max_batch_size < 0:
        raise ConfigError(
            f"model '{config.name}' max_batch_size: expected >= 0; received {config.max_batch_size}"
        )
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for t in tensors:
            if not t.name:
                raise ConfigError(f"model '{config.name}': an {kind} has no name")
            if t.name in seen:
                raise ConfigError(f"model '{config.name}': {kind} '{t.name}' is declared twice")
            seen.add(t.name)
            if t.data_type == DataType.TYPE_INVALID:
                raise ConfigError(f"model '{config.name}': {kind} '{t.name}' has no data_type")
            for d in t.dims:
                if d < -1:
                    raise ConfigError(
                        f"model '{config.name}': {kind} '{t.name}' dims: expected sizes >= -1; "
                        f"received {list(t.dims)}"
                    )


def is_ensemble(config: ModelConfig) -> bool:
    """Whether the config describes Triton's ``ensemble`` platform (a pipeline of models)."""
    return config.HasField("ensemble_scheduling") or config.platform == "ensemble"


def read_config(model_dir: Path) -> ModelConfig:
    config_path = model_dir / "config.pbtxt"
    if config_path.is_file():
        source = f"{model_dir.name}/config.pbtxt"
        raw = config_path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{source}: expected UTF-8 text; byte {exc.start} is {raw[exc.start]:#04x}, "
                f"which is not valid UTF-8 there"
            ) from None
        config = parse_config(text, source)
    else:
        config = ModelConfig()
    if not config.name:
        config.name = model_dir.name
    elif config.name != model_dir.name:
        raise ConfigError(
            f"{model_dir.name}/config.pbtxt name: expected '{model_dir.name}' (the directory "
            f"name); received '{config.name}'"
        )
    validate_config(config)
    return config


def select_versions(model_dir: Path, config: ModelConfig) -> list[str]:
    available = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not available:
        raise ConfigError(f"model '{config.name}': no version directory (e.g. '1/') was found")
    policy = config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        chosen = available
    elif choice == "specific":
        missing = [v for v in policy.specific.versions if v not in available]
        if missing:
            raise ConfigError(
                f"model '{config.name}' version_policy specific: versions {missing} are not in "
                f"the repository; found {available}"
            )
        chosen = sorted(policy.specific.versions)
    else:
        count = policy.latest.num_versions if choice == "latest" else 1
        chosen = available[-max(count, 1) :]
    return [str(v) for v in chosen]


# A version folder's own additions to the model's config: what one version needs and the
# others must not get (e.g. ``accelserve optimize``'s BF16 autocast or TensorRT candidate).
VERSION_OVERLAY = "config_overlay.pbtxt"


def version_config(config: ModelConfig, version_dir: Path) -> ModelConfig:
    """A copy of ``config`` with ``version_dir/config_overlay.pbtxt`` (a partial config in the
    same text format) merged in: parameters replace the model's by key, messages merge."""
    merged = ModelConfig()
    merged.CopyFrom(config)
    path = version_dir / VERSION_OVERLAY
    if path.is_file():
        overlay = parse_config(path.read_text(), f"{version_dir.name}/{VERSION_OVERLAY}")
        merge_overlay(merged, overlay, f"{version_dir.name}/{VERSION_OVERLAY}")
    return merged


def merge_overlay(config: ModelConfig, overlay: ModelConfig, source: str) -> None:
    """Merge ``overlay`` into ``config`` in place; an overlay may not rename the model or change
    its tensors or batching (those describe the model, not one version's execution)."""
    fixed = ("name", "input", "output", "max_batch_size", "version_policy", "platform", "backend")
    messages = ("version_policy", "dynamic_batching", "sequence_batching", "ensemble_scheduling")
    for name in (*fixed, *messages[1:]):
        if overlay.HasField(name) if name in messages else getattr(overlay, name):
            raise ConfigError(
                f"{source}: field '{name}' is the model's, not one version's; an overlay may set "
                f"parameters, optimization and the like"
            )
    config.MergeFrom(overlay)
