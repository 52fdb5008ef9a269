"""Triton's load overrides: a model loaded with another config, or from uploaded files.

Triton's repository-control ``load`` takes parameters (``extension_model_repository.md``):

- ``config``: the model configuration in Triton's JSON form (as ``GET /v2/models/{m}/config``
  answers), used instead of the repository's ``config.pbtxt``;
- ``file:<version>/<name>``: a model file's content (bytes; base64 text over HTTP, which the
  HTTP frontend decodes). With files, the model is loaded from those files alone (the
  repository's directory, if any, is not read), and a ``config`` must come with them.

``parse_load_parameters`` checks them before anything is unloaded, so a malformed override
never takes a serving model down; ``stage`` lays the override out as a model directory (the
config as ``config.pbtxt``, the files, or the repository's version directories linked) in a
temporary directory the repository keeps until the model is unloaded or loaded again.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from google.protobuf import json_format, text_format

from accelserve.errors import InvalidArgumentError
from accelserve.protocol.model_config_pb2 import ModelConfig

CONFIG = "config"
FILE_PREFIX = "file:"


@dataclass(frozen=True)
class LoadOverride:
    config: ModelConfig
    files: dict[str, bytes] = field(default_factory=dict)  # "<version>/<path>" -> content


def parse_load_parameters(name: str, params: Mapping[str, object]) -> LoadOverride | None:
    """The override a load request's parameters describe (None for none); a clear
    InvalidArgumentError ("failed to load '<name>': ...") for anything wrong in them."""
    config: ModelConfig | None = None
    files: dict[str, bytes] = {}
    for key, value in params.items():
        if key == CONFIG:
            config = _config(name, value)
        elif key.startswith(FILE_PREFIX):
            files[_file_path(name, key)] = _file_content(name, key, value)
        else:
            raise InvalidArgumentError(
                f"failed to load '{name}': unknown load parameter '{key}'; expected 'config' "
                f"or 'file:<version>/<file name>'"
            )
    if files and config is None:
        raise InvalidArgumentError(
            f"failed to load '{name}': file overrides ({', '.join(FILE_PREFIX + f for f in files)}) "
            f"need the model's configuration too; expected a 'config' parameter"
        )
    return None if config is None else LoadOverride(config, files)


def stage(
    name: str, source: Path | None, override: LoadOverride
) -> tempfile.TemporaryDirectory[str]:
    """The override as ``<tmp>/<name>/``: the config as config.pbtxt, then the files, or
    (without files) links to ``source``'s version directories."""
    staging = tempfile.TemporaryDirectory(prefix="accelserve-load-")
    model_dir = Path(staging.name) / name
    model_dir.mkdir()
    (model_dir / "config.pbtxt").write_text(text_format.MessageToString(override.config))
    if override.files:
        for relative, content in override.files.items():
            target = model_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
    elif source is not None:
        for version in source.iterdir():
            if version.is_dir() and version.name.isdigit():
                (model_dir / version.name).symlink_to(version.resolve(), target_is_directory=True)
    return staging


def _config(name: str, value: object) -> ModelConfig:
    if type(value) is not str:
        raise InvalidArgumentError(
            f"failed to load '{name}': parameter 'config': expected the model configuration as "
            f"a JSON string; received a {type(value).__name__}"
        )
    config = ModelConfig()
    try:
        json_format.Parse(value, config)
    except json_format.ParseError as exc:
        raise InvalidArgumentError(
            f"failed to load '{name}': parameter 'config' is not a model configuration in "
            f"Triton's JSON form: {str(exc)[:300]}"
        ) from None
    if config.name and config.name != name:
        raise InvalidArgumentError(
            f"failed to load '{name}': parameter 'config' name: expected '{name}' (the model "
            f"loaded); received '{config.name}'"
        )
    config.name = name
    return config


def _file_path(name: str, key: str) -> str:
    path = PurePosixPath(key[len(FILE_PREFIX) :])
    parts = path.parts
    if (
        len(parts) < 2
        or path.is_absolute()
        or not parts[0].isdigit()
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InvalidArgumentError(
            f"failed to load '{name}': file override '{key}': expected "
            f"'file:<version>/<file name>' (e.g. 'file:1/model.onnx'), a path inside the model"
        )
    return path.as_posix()


def _file_content(name: str, key: str, value: object) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    raise InvalidArgumentError(
        f"failed to load '{name}': file override '{key}': expected the file's bytes; "
        f"received a {type(value).__name__}"
    )
