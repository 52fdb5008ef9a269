"""The embeddings service in process: a real DataPlane over a stand-in repository whose
embedding model is a deterministic fake pipeline (no server, no tokenizer, no ONNX)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from accelserve.config import input_specs, output_specs, parse_config
from accelserve.dataplane import DataPlane
from accelserve.errors import ModelNotFoundError
from accelserve.model import READY, ModelRecord, ModelVersion
from accelserve.services.embeddings import (
    ContextLengthError,
    EmbeddingInputError,
    EmbeddingModelNotFoundError,
    EmbeddingsService,
)
from accelserve.stats import ModelStats
from accelserve.types import InferRequest

DIMS = 6
EMB = f"""
name: "emb"
platform: "ensemble"
max_batch_size: 2
input [
  {{ name: "text" data_type: TYPE_STRING dims: [ 1 ] optional: true }},
  {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] optional: true }},
  {{ name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] optional: true }}
]
output [
  {{ name: "embedding" data_type: TYPE_FP32 dims: [ {DIMS} ] }},
  {{ name: "token_count" data_type: TYPE_INT64 dims: [ 1 ] }}
]
ensemble_scheduling {{ step [ {{ model_name: "emb_tokenizer" model_version: -1 }} ] }}
"""
TOKENIZER = """
name: "emb_tokenizer"
backend: "accelserve_tokenizer"
max_batch_size: 2
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] } ]
parameters { key: "max_length" value: { string_value: "5" } }
parameters { key: "vocab_size" value: { string_value: "100" } }
"""
PLAIN = """
name: "plain"
backend: "onnxruntime"
max_batch_size: 2
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]
"""


def _vectors(seed: np.ndarray) -> np.ndarray:
    """Deterministic unit vectors, one per row of ``seed`` (what a pooled, normalized head
    gives)."""
    raw = np.cos(np.outer(seed.astype(np.float64) + 1.0, np.arange(1, DIMS + 1)))
    return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).astype(np.float32)


class FakePipeline:
    """Text: one token per word plus two specials; ids: the vector of the ids' sum."""

    def __init__(self) -> None:
        self.requests: list[InferRequest] = []

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        self.requests.append(request)
        if "text" in request.inputs:
            counts = np.array([[len(t.split()) + 2] for t in request.inputs["text"][:, 0]])
            return {"embedding": _vectors(counts[:, 0]), "token_count": counts}
        ids = request.inputs["input_ids"] * request.inputs["attention_mask"]
        return {"embedding": _vectors(ids.sum(axis=1)), "token_count": ids[:, :1]}

    async def stop(self) -> None:
        pass


class Repository:
    """What the data plane reads of a repository: get, index and the records."""

    def __init__(self, *versions: ModelVersion) -> None:
        self.models = {
            v.name: ModelRecord(v.name, READY, versions={v.version: v}) for v in versions
        }

    def get(self, name: str, version: str = "") -> ModelVersion:
        record = self.models.get(name)
        if record is None:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' is not found")
        return record.versions[version or "1"]

    def index(self) -> list[dict[str, str]]:
        return [{"name": n, "version": "1", "state": READY} for n in self.models]


def _version(text: str, runner: Any = None) -> ModelVersion:
    config = parse_config(text)
    return ModelVersion(
        name=config.name,
        version="1",
        config=config,
        inputs={s.name: s for s in input_specs(config)},
        outputs={s.name: s for s in output_specs(config)},
        runner=runner,
        stats=ModelStats(config.name, "1"),
    )


@pytest.fixture()
def pipeline() -> FakePipeline:
    return FakePipeline()


@pytest.fixture()
def service(pipeline: FakePipeline) -> EmbeddingsService:
    repository = Repository(_version(EMB, pipeline), _version(TOKENIZER), _version(PLAIN))
    return EmbeddingsService(DataPlane(repository))  # type: ignore[arg-type]


def test_only_text_to_vector_models_are_listed(service: EmbeddingsService) -> None:
    assert service.model_names() == ["emb"]
    info = service.model("emb")
    assert (info.text_input, info.output, info.dims, info.max_rows) == ("text", "embedding", 6, 2)
    assert info.count_output == "token_count"
    assert info.ids_inputs == ("input_ids", "attention_mask")
    assert (info.max_length, info.vocab_size) == (5, 100)  # from the tokenizer step's config
    assert service.model("emb") is info  # described once per loaded version


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "The model 'nope' does not exist"),
        ("plain", "The model 'plain' is not an embedding model (it needs a BYTES [1] text"),
        ("emb_tokenizer", "is not an embedding model"),
    ],
)
def test_unknown_or_unsuitable_model(service: EmbeddingsService, name: str, message: str) -> None:
    with pytest.raises(EmbeddingModelNotFoundError) as info:
        service.model(name)
    assert message in info.value.message


def test_texts_are_chunked_by_max_batch_size_in_order(
    service: EmbeddingsService, pipeline: FakePipeline
) -> None:
    texts = ["a", "a b", "a b c", "d", "e f"]
    result = asyncio.run(service.embed_texts(service.model("emb"), texts))
    assert [r.inputs["text"].shape for r in pipeline.requests] == [(2, 1), (2, 1), (1, 1)]
    assert all(r.outputs == ["embedding", "token_count"] for r in pipeline.requests)
    assert result.token_counts == [3, 4, 5, 3, 4]
    np.testing.assert_array_equal(result.vectors, _vectors(np.array([3, 4, 5, 3, 4])))


def test_a_text_longer_than_the_model_accepts_is_refused(service: EmbeddingsService) -> None:
    with pytest.raises(ContextLengthError) as info:
        asyncio.run(service.embed_texts(service.model("emb"), ["ok", "one two three four"]))
    assert info.value.field == "input"
    assert info.value.message == (
        "input[1] is 6 tokens long; model 'emb' accepts at most 5 tokens per input. "
        "Shorten it or split it."
    )


def test_token_lists_are_padded_with_zeros_and_masked(
    service: EmbeddingsService, pipeline: FakePipeline
) -> None:
    tokens = [[7, 8, 9], [1], [4, 4]]
    result = asyncio.run(service.embed_tokens(service.model("emb"), tokens))
    first, second = pipeline.requests
    np.testing.assert_array_equal(first.inputs["input_ids"], [[7, 8, 9], [1, 0, 0]])
    np.testing.assert_array_equal(first.inputs["attention_mask"], [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(second.inputs["input_ids"], [[4, 4]])
    assert first.outputs == ["embedding"]
    assert result.token_counts == [3, 1, 2]
    np.testing.assert_array_equal(result.vectors, _vectors(np.array([24, 1, 8])))


@pytest.mark.parametrize("dimensions", [1, 2, 5, 6])
def test_dimensions_keeps_the_first_components_renormalized(
    service: EmbeddingsService, dimensions: int
) -> None:
    info = service.model("emb")
    texts = ["a", "a b c", "d e"]
    full = asyncio.run(service.embed_texts(info, texts)).vectors
    cut = asyncio.run(service.embed_texts(info, texts, dimensions)).vectors
    assert cut.shape == (3, dimensions) and cut.dtype == np.float32
    want = full[:, :dimensions] / np.linalg.norm(full[:, :dimensions], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, want, rtol=1e-6, atol=1e-7)


def test_renormalizing_matches_the_numpy_it_replaced() -> None:
    """The kernel against the frontend's former NumPy code, on MiniLM-sized vectors."""
    from accelserve.services.embeddings import EmbeddingModel, _keep

    info = EmbeddingModel("m", "text", "embedding", 384, 8)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2048, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[3] = 0.0  # a zero vector stays zero (eps), as before
    for dimensions in (1, 8, 64, 383):
        old = np.ascontiguousarray(vectors[:, :dimensions])
        old /= np.maximum(np.linalg.norm(old, axis=1, keepdims=True), 1e-12)
        np.testing.assert_allclose(_keep(vectors, info, dimensions), old, rtol=2e-6, atol=1e-7)
    assert _keep(vectors, info, 384) is vectors  # all dimensions: nothing to do


@pytest.mark.parametrize("value", [0, 7, "3", 2.0, True])
def test_bad_dimensions(service: EmbeddingsService, value: object) -> None:
    with pytest.raises(EmbeddingInputError) as info:
        service.model("emb").check_dimensions(value)
    assert info.value.field == "dimensions"
    assert info.value.message == (
        f"dimensions: expected an integer from 1 to 6 (the size of 'emb' embeddings); "
        f"received {value!r}"
    )


def test_token_ids_are_checked_against_the_tokenizer(service: EmbeddingsService) -> None:
    info = service.model("emb")
    info.check_token_ids([0, 99, 5, 5, 5], "input")
    with pytest.raises(EmbeddingInputError, match=r"input\[2\]: token id 100 is outside 0..99"):
        info.check_token_ids([1, 100], "input[2]")
    with pytest.raises(ContextLengthError, match="input is 6 tokens long; model 'emb' accepts"):
        info.check_token_ids([1] * 6, "input")


def test_token_ids_need_a_model_that_takes_them(service: EmbeddingsService) -> None:
    from dataclasses import replace

    info = replace(service.model("emb"), ids_inputs=None)
    with pytest.raises(EmbeddingInputError, match="model 'emb' does not accept token ids"):
        asyncio.run(service.embed_tokens(info, [[1, 2]]))


def test_openai_requests_rejected_before_the_model_are_counted(
    service: EmbeddingsService, pipeline: FakePipeline
) -> None:
    from accelserve.frontends.openai import OpenAIFrontend

    frontend = OpenAIFrontend(service.dataplane)
    stats = service.dataplane.model("emb").stats
    for body in (
        b'{"model": "emb", "input": ""}',
        b'{"model": "emb", "input": ["a"], "encoding_format": "hex"}',
        b'{"model": "emb", "input": ["a"], "dimensions": 0}',
    ):
        status, _, _ = asyncio.run(frontend("POST", "/v1/embeddings", [], body))
        assert status == 400
    assert stats.fail_reasons == {"REJECTED": 3}
    status, _, _ = asyncio.run(
        frontend("POST", "/v1/embeddings", [], b'{"model": "emb", "input": "a"}')
    )
    assert status == 200 and stats.fail_reasons == {"REJECTED": 3}
