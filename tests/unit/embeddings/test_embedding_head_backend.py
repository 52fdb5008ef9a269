"""The embedding-head backend: masked mean pooling + L2 normalization through the kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accelserve.backends.embedding_head import EmbeddingHeadBackend
from accelserve.config import parse_config
from accelserve.devices import Device
from accelserve.errors import ConfigError

CONFIG = """
name: "head"
backend: "accelserve_embedding_head"
max_batch_size: 8
input [
  { name: "hidden" data_type: TYPE_FP32 dims: [ -1, 16 ] },
  { name: "mask" data_type: TYPE_INT64 dims: [ -1 ] }
]
output [ { name: "vector" data_type: TYPE_FP32 dims: [ 16 ] } ]
"""


def _reference(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    keep = mask.astype(np.float64)[:, :, None]
    mean = (hidden * keep).sum(1) / np.maximum(keep.sum(1), 1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)


def test_pools_unmasked_tokens_and_normalizes(tmp_path: Path) -> None:
    backend = EmbeddingHeadBackend()
    backend.load(tmp_path, parse_config(CONFIG), Device("cpu", 0))
    assert [s.name for s in backend.inputs] == ["hidden", "mask"]
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 5, 16)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=np.int64)
    hidden[1, 2:] = np.nan  # padding is never read
    out = backend.infer({"hidden": hidden, "mask": mask})
    assert set(out) == {"vector"} and out["vector"].dtype == np.float32
    np.testing.assert_allclose(out["vector"], _reference(np.nan_to_num(hidden), mask), atol=1e-6)


def test_default_names_without_a_config(tmp_path: Path) -> None:
    backend = EmbeddingHeadBackend()
    backend.load(tmp_path, parse_config('name: "head"'), Device("cpu", 0))
    assert [s.name for s in backend.inputs] == ["token_embeddings", "attention_mask"]
    assert [s.name for s in backend.outputs] == ["embedding"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (CONFIG.replace("TYPE_INT64", "TYPE_FP32"), "expects 2 inputs, one TYPE_FP32"),
        (
            CONFIG.replace("output [", 'output [ { name: "x" data_type: TYPE_FP32 dims: [ 1 ] },'),
            "the embedding head has one output; the config declares 2",
        ),
    ],
)
def test_config_errors(tmp_path: Path, config: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        EmbeddingHeadBackend().load(tmp_path, parse_config(config), Device("cpu", 0))
    assert message in str(info.value)
