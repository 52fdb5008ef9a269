"""The loaded-model vocabulary: what a model version is once loaded, what runs its requests, and
the states a model moves through. The repository builds these; the data plane, the ensemble
platform and in-process models read them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Self

import numpy as np

from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.stats import ModelStats
from accelserve.types import InferRequest, InferResponse, StreamResponse, TensorSpec

if TYPE_CHECKING:
    from accelserve.scheduling.instances import ModelInstance
    from accelserve.validation import ValueChecks

READY, UNAVAILABLE, LOADING, UNLOADING = "READY", "UNAVAILABLE", "LOADING", "UNLOADING"
_MEMORY_TYPES = {"cpu": "CPU", "cuda": "GPU", "tpu": "TPU"}


class Runner(Protocol):
    """What a loaded version executes requests with (the scheduler, or an ensemble)."""

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]: ...

    async def stop(self) -> None: ...


@dataclass
class ModelVersion:
    name: str
    version: str
    config: ModelConfig
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    runner: Runner
    stats: ModelStats
    placements: list[dict[str, object]] = field(default_factory=list)  # static (ensembles)
    instances: list[ModelInstance] = field(default_factory=list)
    labels: dict[str, list[str]] = field(default_factory=dict)  # output -> label_filename's lines
    # What the config declares about input values (token ids, text), checked on admission.
    checks: ValueChecks = field(init=False, repr=False)

    def __post_init__(self) -> None:
        from accelserve.validation import value_checks

        self.checks = value_checks(self.config)

    @property
    def platform(self) -> str:
        return self.config.platform or self.config.backend

    def placement(self) -> list[dict[str, object]]:
        """Where each instance lives, what device memory it holds (None when its backend cannot
        tell) and how many batches it has run: accelserve's ``instances`` key in the config."""
        if not self.instances:
            return self.placements
        return [
            {
                "instance": i.name,
                "device": str(i.device),
                "memory_bytes": i.backend.memory_bytes(),
                "execution_count": i.execution_count,
            }
            for i in self.instances
        ]

    def memory_usage(self) -> list[dict[str, object]]:
        """Triton's ``memory_usage`` statistics: one entry per instance whose backend can tell."""
        rows: list[dict[str, object]] = []
        for instance in self.instances:
            size = instance.backend.memory_bytes()
            if size is not None:
                kind = _MEMORY_TYPES[instance.device.kind]
                rows.append({"type": kind, "id": instance.device.index, "byte_size": size})
        return rows

    @classmethod
    def in_process(
        cls,
        config: ModelConfig,
        version: str,
        inputs: dict[str, TensorSpec],
        outputs: dict[str, TensorSpec],
    ) -> ModelVersion:
        """A version without a queue: what an in-process model checks its requests against."""
        return cls(
            name=config.name,
            version=version,
            config=config,
            inputs=inputs,
            outputs=outputs,
            runner=None,  # type: ignore[arg-type]  # no queue in process
            stats=ModelStats(config.name, version),
        )


class InProcessModel:
    """The metadata and context-manager side of what ``accelserve.load`` returns (a model or
    an ensemble run in this process), from its config and its queue-less ``ModelVersion``."""

    config: ModelConfig
    _spec: ModelVersion

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return [s.as_metadata(self.config.max_batch_size) for s in self._spec.inputs.values()]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [s.as_metadata(self.config.max_batch_size) for s in self._spec.outputs.values()]

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class ModelRecord:
    name: str
    state: str = UNAVAILABLE
    reason: str = ""
    versions: dict[str, ModelVersion] = field(default_factory=dict)


class ModelLookup(Protocol):
    """What a platform built on other models (the ensemble) needs from the repository, so that
    it never imports the repository itself."""

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The READY version (latest when ``version`` is empty); raises when it is not."""
        ...

    async def require(self, name: str) -> ModelRecord:
        """The model's record, loading the model first if it has not been loaded yet."""
        ...


class StreamingRunner(Runner, Protocol):
    """A runner whose model may answer a request with a stream of responses (decoupled)."""

    def infer_stream(self, request: InferRequest) -> AsyncIterator[StreamResponse]: ...


class ModelCaller(Protocol):
    """What a model calling other models of the server needs (Triton's business logic
    scripting): the data plane is one; the server hands it to the repository."""

    async def infer(self, name: str, version: str, request: InferRequest) -> InferResponse: ...

    def infer_stream(
        self, name: str, version: str, request: InferRequest
    ) -> AsyncIterator[StreamResponse]: ...
