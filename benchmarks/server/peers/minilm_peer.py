"""all-MiniLM-L6-v2 for the peer servers, from the same files accelserve serves.

Runs in the peers' venvs (benchmarks/.peers/py, and Triton's Python-backend stub), so it needs
only numpy, onnxruntime and tokenizers. ``MINILM_DIR`` is a model repository written by
``accelserve export sentence-transformer`` (``minilm_tokenizer/1/tokenizer.json``,
``minilm_transformer/1/model.onnx``); the ONNX graph is either the transformer (pooled here, in
NumPy, as a peer's user would write it) or the transformer with pooling inside.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

MAX_BATCH = 64
DIMS = 384

METADATA = {
    "name": "minilm",
    "versions": ["1"],
    "platform": "python",
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1, 1]}],
    "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, DIMS]}],
}
CONFIG = {
    "name": "minilm",
    "backend": "python",
    "max_batch_size": MAX_BATCH,
    "input": [{"name": "text", "data_type": "TYPE_STRING", "dims": [1]}],
    "output": [{"name": "embedding", "data_type": "TYPE_FP32", "dims": [DIMS]}],
}
METADATA_JSON = json.dumps(METADATA).encode()
CONFIG_JSON = json.dumps(CONFIG).encode()


class BadRequest(ValueError):
    pass


class Embedder:
    """Tokenize (pad to the longest of the batch, truncate at 256), run ONNX Runtime, pool."""

    def __init__(self, model_dir: str | None = None, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        root = Path(model_dir or os.environ["MINILM_DIR"])
        self.tokenizer = Tokenizer.from_file(
            str(root / "minilm_tokenizer" / "1" / "tokenizer.json")
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or os.environ.get("MINILM_THREADS", "0"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        path = root / "minilm_transformer" / "1" / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.output = self.session.get_outputs()[0].name
        self.pooled = self.output == "embedding"

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The embeddings [n, 384] and each sentence's token count [n, 1] (after truncation)."""
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        counts = mask.sum(axis=1, keepdims=True)
        (out,) = self.session.run([self.output], {"input_ids": ids, "attention_mask": mask})
        if self.pooled:
            return out, counts
        weights = mask[:, :, None].astype(np.float32)
        mean = (out * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        return (mean / np.maximum(norms, 1e-12)).astype(np.float32), counts


def decode(payload: dict[str, Any]) -> list[str]:
    """The sentences of a V2 JSON request (BYTES ``text`` [n, 1])."""
    for item in payload.get("inputs", ()):
        if item.get("name") == "text" and item.get("datatype") == "BYTES":
            data = item.get("data")
            flat = (
                data if data and not isinstance(data[0], list) else [x for row in data for x in row]
            )
            if not flat or not all(isinstance(x, str) for x in flat):
                raise BadRequest("input 'text': expected a non-empty list of strings")
            return flat
    raise BadRequest("expected a BYTES input named 'text'")


def response(vectors: np.ndarray) -> dict[str, Any]:
    return {
        "model_name": "minilm",
        "model_version": "1",
        "outputs": [
            {
                "name": "embedding",
                "datatype": "FP32",
                "shape": list(vectors.shape),
                "data": vectors.reshape(-1).tolist(),
            }
        ],
    }
