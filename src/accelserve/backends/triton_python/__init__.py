"""Triton's Python backend API: ``model.py`` files that define ``class TritonPythonModel``.

``is_triton_python`` tells such a model from one in accelserve's own Python style (``class
Model``, ``backends/python.py``) by reading the file; ``load.py`` loads it as a platform
(``runner.py``), ``worker.py`` runs it, and ``triton_python_backend_utils.py`` is the module
the model imports.
"""

from __future__ import annotations

import re
from pathlib import Path

from accelserve.protocol.model_config_pb2 import ModelConfig

_CLASS = re.compile(rb"^class\s+TritonPythonModel\b", re.MULTILINE)


def is_triton_python(model_dir: Path, config: ModelConfig) -> bool:
    """Whether the model is a Python-backend model whose files define TritonPythonModel (its
    ``python_class`` parameter, accelserve's own, picks another class explicitly)."""
    if (
        config.platform
        or config.backend not in ("python", "")
        or "python_class" in config.parameters
    ):
        return False
    filename = config.default_model_filename or "model.py"
    for version_dir in model_dir.iterdir():
        path = version_dir / filename
        if version_dir.name.isdigit() and path.is_file():
            return _CLASS.search(path.read_bytes()) is not None
    return False
