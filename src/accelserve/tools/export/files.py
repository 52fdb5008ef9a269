"""Model files a user already has -> a version directory: ``.onnx`` files (or an in-memory
``onnx.ModelProto``), ``torch.export`` ``.pt2`` files and SavedModel directories. Nothing is
imported: the file is copied, and the backend that serves it reads its tensors later."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from accelserve.errors import InvalidArgumentError
from accelserve.tools.export.request import Artifact

# format -> (file or directory name in the version directory, platform)
FILE_FORMATS: dict[str, tuple[str, str]] = {
    "onnx": ("model.onnx", "onnxruntime_onnx"),
    "pt2": ("model.pt2", "accelserve_torch_export"),
    "savedmodel": ("model.savedmodel", "tensorflow_savedmodel"),
}


def is_onnx_proto(model: Any) -> bool:
    return type(model).__name__ == "ModelProto" and hasattr(model, "SerializeToString")


def format_of_path(path: Path) -> str | None:
    """The format a path's name or content shows, if any."""
    if path.is_dir():
        return "savedmodel" if (path / "saved_model.pb").is_file() else None
    return {".onnx": "onnx", ".pt2": "pt2"}.get(path.suffix.lower())


def copy_model(source: Any, fmt: str, version_dir: Path) -> Artifact:
    """Write ``source`` (a path, or an ``onnx.ModelProto`` for onnx) into ``version_dir``."""
    filename, platform = FILE_FORMATS[fmt]
    target = version_dir / filename
    if is_onnx_proto(source):
        target.write_bytes(source.SerializeToString())
        return Artifact(platform)
    path = Path(source)
    if fmt == "savedmodel":
        if not (path / "saved_model.pb").is_file():
            raise InvalidArgumentError(
                f"model: expected a SavedModel directory (with saved_model.pb); received '{path}'"
            )
        shutil.copytree(path, target)
    else:
        if not path.is_file():
            raise InvalidArgumentError(f"model: expected a .{fmt} file; received '{path}'")
        shutil.copyfile(path, target)
    return Artifact(platform)
