"""The same pipeline in process: each step loaded with accelserve.load, chained by
LocalEnsemble (what accelserve.load returns for an ensemble directory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from minilm_support import LONG, SENTENCES, assert_close

import accelserve
from accelserve.api import LocalEnsemble
from accelserve.config import read_config
from accelserve.errors import InvalidArgumentError


def _open(repository: Path, name: str) -> LocalEnsemble:
    model_dir = repository / name
    return LocalEnsemble(
        model_dir,
        read_config(model_dir),
        lambda step, version: accelserve.load(
            str(repository / step), device="cpu", version=version
        ),
    )


@pytest.mark.parametrize("name", ["minilm", "minilm_onnx"])
def test_local_pipeline_matches_sentence_transformers(
    minilm_repository: Path, reference: dict, name: str
) -> None:
    texts = [*SENTENCES[:20], LONG]
    with _open(minilm_repository, name) as model:
        assert model.name == name
        assert {"name": "embedding", "datatype": "FP32", "shape": [-1, 384]} in model.outputs
        got = model.infer({"text": texts}, outputs=["embedding"])["embedding"]
    assert_close(got, np.stack([reference[t] for t in texts]))


def test_local_steps_one_by_one(minilm_repository: Path, reference: dict) -> None:
    """The step models are ordinary models for accelserve.load."""
    texts = SENTENCES[:8]
    text = np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1)
    with (
        accelserve.load(str(minilm_repository / "minilm_tokenizer")) as tokenizer,
        accelserve.load(str(minilm_repository / "minilm_transformer")) as transformer,
        accelserve.load(str(minilm_repository / "minilm_head")) as head,
    ):
        ids = tokenizer.infer({"text": text})
        hidden = transformer.infer({k: ids[k] for k in ("input_ids", "attention_mask")})
        out = head.infer(
            {
                "token_embeddings": hidden["token_embeddings"],
                "attention_mask": ids["attention_mask"],
            }
        )
    assert_close(out["embedding"], np.stack([reference[t] for t in texts]))


def test_local_pipeline_checks_inputs(minilm_repository: Path) -> None:
    with _open(minilm_repository, "minilm") as model, pytest.raises(InvalidArgumentError) as info:
        model.infer({"text": np.array([[1.0]], dtype=np.float32)})
    assert "input 'text' datatype: expected BYTES; received FP32" in str(info.value)


def test_load_opens_an_ensemble_directory_with_its_sibling_steps(
    minilm_repository: Path, reference: dict
) -> None:
    texts = SENTENCES[:4]
    with accelserve.load(str(minilm_repository / "minilm"), device="cpu") as model:
        assert isinstance(model, LocalEnsemble)
        got = model.infer({"text": texts}, outputs=["embedding"])["embedding"]
    assert_close(got, np.stack([reference[t] for t in texts]))
