"""Helpers shared by the backend tests: configs from config.pbtxt text, version directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelserve.config import parse_config
from accelserve.devices import Device, discover
from accelserve.protocol.model_config_pb2 import ModelConfig


def config(text: str = "", name: str = "m") -> ModelConfig:
    """A ModelConfig parsed from config.pbtxt text, as the repository reads it."""
    parsed = parse_config(text)
    parsed.name = parsed.name or name
    return parsed


def params(**values: str) -> str:
    """config.pbtxt ``parameters`` entries (values quoted as text format strings)."""
    return "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{_quote(v)}" }} }}'
        for k, v in values.items()
    )


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def version_dir(root: Path, name: str, version: str = "1") -> Path:
    path = root / name / version
    path.mkdir(parents=True, exist_ok=True)
    return path


# Devices no host here has: one past the GPUs present (cuda:0 on a CPU-only machine).
CUDA_COUNT = sum(1 for info in discover() if info.device.kind == "cuda")
ABSENT_CUDA = Device("cuda", CUDA_COUNT)
ABSENT_TPU = Device("tpu", 64)
needs_cuda = pytest.mark.skipif(CUDA_COUNT == 0, reason="needs a CUDA GPU")
