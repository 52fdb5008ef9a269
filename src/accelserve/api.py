"""In-process use: ``accelserve.load("model_dir", device="/device:GPU:0").infer({...})``.

The model runs in this process on the named device, with the same config handling and input
checks as the server, but without a queue: each ``infer`` call is one backend execution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from accelserve.config import input_specs, output_specs, read_config, select_versions
from accelserve.devices import resolve_device
from accelserve.errors import ConfigError
from accelserve.model import InProcessModel, ModelVersion
from accelserve.repository import load_backend
from accelserve.types import InferRequest
from accelserve.validation import prepare_inputs


class LocalModel(InProcessModel):
    def __init__(self, path: str | Path, device: str = "cpu", version: str = "") -> None:
        model_dir = Path(path)
        if not model_dir.is_dir():
            raise ConfigError(f"model directory '{path}' does not exist")
        config = read_config(model_dir)
        available = select_versions(model_dir, config)
        if version and version not in available:
            raise ConfigError(
                f"model '{config.name}' version: expected one of {available}; received {version!r}"
            )
        self.version = version or available[-1]
        self.device = resolve_device(device)
        self.backend = load_backend(model_dir / self.version, config, self.device)
        self.config = config
        self._spec = ModelVersion.in_process(
            config,
            self.version,
            {s.name: s for s in input_specs(config)},
            {s.name: s for s in output_specs(config)},
        )

    def infer(
        self, inputs: dict[str, Any], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run one batch; arrays are checked against the config like a server request."""
        request = InferRequest(
            inputs={k: _as_array(v) for k, v in inputs.items()}, outputs=list(outputs or [])
        )
        prepare_inputs(self._spec, request)
        result = self.backend.infer(request.inputs)
        return {k: result[k] for k in request.outputs} if request.outputs else result

    def close(self) -> None:
        self.backend.unload()


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return np.array([v.encode() for v in value], dtype=object)
    return np.asarray(value)


def load(path: str | Path, device: str = "cpu", version: str = "") -> LocalModel:
    return LocalModel(path, device=device, version=version)
