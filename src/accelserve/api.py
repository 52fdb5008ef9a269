"""In-process use: ``accelserve.load("model_dir", device="/device:GPU:0").infer({...})``.

The model runs in this process on the named device, with the same config handling and input
checks as the server, but without a queue: each ``infer`` call is one backend execution. An
ensemble directory loads as a ``LocalEnsemble`` whose steps are its sibling model directories.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.config import (
    input_specs,
    is_ensemble,
    output_specs,
    read_config,
    select_versions,
)
from accelserve.devices import resolve_device
from accelserve.ensemble import Graph, collect_outputs
from accelserve.errors import ConfigError
from accelserve.model import InProcessModel, ModelVersion
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.repository import load_backend
from accelserve.types import InferRequest, TensorSpec
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


class LocalEnsemble(InProcessModel):
    """An ensemble run in process (what ``accelserve.load`` returns for an ensemble directory):
    the steps run one after another in the caller's thread, each a local model that
    ``open_step(model_name, version)`` opens (e.g. ``accelserve.load`` on the sibling
    directory), with the same input checks as the server."""

    def __init__(
        self, model_dir: Path, config: ModelConfig, open_step: Callable[[str, str], Any]
    ) -> None:
        self.config = config
        self.graph = Graph.from_config(config)
        self.version = select_versions(model_dir, config)[-1]
        self._steps: dict[tuple[str, str], Any] = {}
        try:
            for step in self.graph.steps:
                key = (step.model, step.version)
                if key not in self._steps:
                    self._steps[key] = open_step(step.model, step.version)
        except BaseException:
            self.close()
            raise
        self._spec = ModelVersion.in_process(
            config, self.version, self.graph.inputs, self.graph.outputs
        )

    def infer(
        self, inputs: dict[str, Any], outputs: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Run the pipeline on one batch; a list of str for a BYTES ``[1]`` input is one row
        per string."""
        batched = self.config.max_batch_size > 0
        request = InferRequest(
            inputs={
                k: _local_array(v, self.graph.inputs.get(k), batched) for k, v in inputs.items()
            },
            outputs=list(outputs or []),
        )
        prepare_inputs(self._spec, request)
        tensors = dict(request.inputs)
        waves, wanted = self.graph.plan(frozenset(tensors), tuple(request.outputs))
        for wave in waves:
            for index in wave:
                step = self.graph.steps[index]
                model = self._steps[(step.model, step.version)]
                produced = model.infer({name: tensors[t] for name, t in step.inputs})
                tensors.update(collect_outputs(self.name, step, produced))
        return {name: tensors[name] for name in wanted}

    def close(self) -> None:
        for model in self._steps.values():
            model.close()
        self._steps = {}


def _local_array(value: Any, spec: TensorSpec | None, batched: bool) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, str):
        value = [value]
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        array: np.ndarray = np.empty(len(value), dtype=object)
        array[:] = [v.encode() for v in value]
        rows = spec is not None and batched and spec.dims == (1,)
        return array.reshape(-1, 1) if rows else array
    return np.asarray(value)


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return np.array([v.encode() for v in value], dtype=object)
    return np.asarray(value)


def load(path: str | Path, device: str = "cpu", version: str = "") -> LocalModel | LocalEnsemble:
    model_dir = Path(path)
    if model_dir.is_dir():
        config = read_config(model_dir)
        if is_ensemble(config):
            return LocalEnsemble(
                model_dir,
                config,
                lambda step, step_version: load(model_dir.parent / step, device, step_version),
            )
    return LocalModel(path, device=device, version=version)
