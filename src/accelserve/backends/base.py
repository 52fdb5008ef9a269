"""The backend contract.

A backend instance is bound to one device and runs whole batches: ``infer`` takes a dict of
NumPy arrays (batch dimension first when the model batches) and returns a dict of NumPy arrays.
It never sees HTTP, JSON or the batcher. ``load`` may fill in the specs it discovered so the
repository can complete or check the config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from accelserve.devices import Device
from accelserve.errors import ConfigError
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.types import TensorSpec


class Backend(ABC):
    #: model file name looked up in the version directory when the config names none
    default_filename: str = ""
    #: whether a tiny call may run on the event loop's thread (scheduling.instances); False
    #: for backends whose call can block on something else (another process)
    inline_ok: bool = True
    #: whether the backend's own threads spin-wait after a call, keeping cores busy (ONNX
    #: Runtime's intra-op pool on CPU); the HTTP server's busy polling then stands aside
    spins_after_call: bool = False

    def __init__(self) -> None:
        self.device: Device = Device("cpu", 0)
        self.inputs: list[TensorSpec] = []  # as discovered from the model file, if it can tell
        self.outputs: list[TensorSpec] = []
        # None: the file cannot tell; 0: no batch dim; -1: dynamic batch dim; N > 0: batches up to N
        self.max_batch_size: int | None = None

    @abstractmethod
    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
        """Load the model in ``version_dir`` onto ``device``.

        ``config`` is the model's ``ModelConfig`` protobuf message (possibly incomplete: inputs
        and outputs may be empty when the config is auto-completed). Raise ``ConfigError`` with a
        clear message for anything wrong with the files or config.
        """

    def model_file(self, version_dir: Path, config: ModelConfig) -> Path:
        """The version's model file: the config's ``default_model_filename``, else this
        backend's ``default_filename``; a ``ConfigError`` naming it when it is missing."""
        filename = config.default_model_filename or self.default_filename
        path = version_dir / filename
        if not path.is_file():
            raise ConfigError(
                f"model '{config.name}' version {version_dir.name}: expected file '{filename}' "
                "is missing"
            )
        return path

    @abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Raise ``ModelExecutionError`` with a client-safe message on failure."""

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release the model's resources."""

    def memory_bytes(self) -> int | None:
        """Device memory this instance holds, when the backend can tell."""
        return None
