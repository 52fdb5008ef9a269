"""Embeddings: the models that take text to one vector, and running requests on them.

An embedding model takes text as a BYTES ``[1]`` input and gives an FP32 ``[H]`` vector (the
``minilm`` ensemble; anything ``accelserve export sentence-transformer`` writes); it may also
give a ``token_count`` and take pre-tokenized ``input_ids``/``attention_mask``. Its limits
(``max_length``, ``vocab_size``) come from the config of its tokenizer step.

A request of any size becomes ``max_batch_size``-row ``DataPlane.infer`` calls run together;
token lists are padded with zeros to the longest of their call. ``dimensions`` keeps the first
components and L2-normalizes again with the project's kernel. Errors are ``AccelServeError``
subclasses naming the input, the expected and the received values; the frontend maps them to
its wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from accelserve import kernels
from accelserve.dataplane import DataPlane
from accelserve.errors import (
    AccelServeError,
    ErrorCode,
    InvalidArgumentError,
    ModelNotFoundError,
)
from accelserve.model import ModelVersion
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.types import InferRequest

TOKENIZER_BACKEND = "accelserve_tokenizer"


class EmbeddingInputError(InvalidArgumentError):
    """A request value the model cannot take; ``field`` names it ("input", "dimensions")."""

    def __init__(self, message: str, field: str = "input") -> None:
        super().__init__(message)
        self.field = field


class ContextLengthError(EmbeddingInputError):
    """An input has more tokens than the model accepts (nothing is truncated silently)."""


class EmbeddingModelNotFoundError(ModelNotFoundError):
    """No ready model of that name, or one that does not take text to one vector."""


@dataclass(frozen=True)
class EmbeddingModel:
    """How to call one model for embeddings (derived from its config, cached per version)."""

    name: str
    text_input: str
    output: str
    dims: int
    max_rows: int
    count_output: str | None = None
    ids_inputs: tuple[str, str] | None = None  # (input_ids, attention_mask)
    max_length: int | None = None
    vocab_size: int | None = None

    def check_dimensions(self, value: object) -> int | None:
        """``value`` as a number of components to keep (None: all); raises when it is not one."""
        if value is None or (type(value) is int and 1 <= value <= self.dims):
            return value
        raise EmbeddingInputError(
            f"dimensions: expected an integer from 1 to {self.dims} (the size of "
            f"'{self.name}' embeddings); received {value!r}",
            "dimensions",
        )

    def check_token_ids(self, ids: list[int], where: str) -> None:
        """Raise when the token list ``where`` (e.g. "input[2]") has ids outside the vocabulary
        or more tokens than the model accepts."""
        vocab = self.vocab_size
        if vocab is not None:
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise EmbeddingInputError(
                    f"{where}: token id {bad} is outside 0..{vocab - 1} (the vocabulary of "
                    f"'{self.name}')"
                )
        if self.max_length is not None and len(ids) > self.max_length:
            raise ContextLengthError(
                f"{where} is {len(ids)} tokens long; model '{self.name}' accepts at most "
                f"{self.max_length} tokens per input"
            )


StepConfig = Callable[[str], ModelConfig | None]


def describe(model: ModelVersion, step_config: StepConfig | None = None) -> EmbeddingModel | None:
    """``model`` as an embedding model, or None when it does not take text to one vector.

    ``step_config(name)`` returns a step model's config, to find the tokenizer's limits."""
    mbs = model.config.max_batch_size
    text = [s.name for s in model.inputs.values() if s.datatype == "BYTES" and s.dims == (1,)]
    vectors = [
        s
        for s in model.outputs.values()
        if s.datatype == "FP32" and len(s.dims) == 1 and s.dims[0] > 0
    ]
    if mbs < 1 or len(text) != 1 or not vectors:
        return None
    vector = next((s for s in vectors if s.name == "embedding"), vectors[0])
    count = model.outputs.get("token_count")
    ids, mask = model.inputs.get("input_ids"), model.inputs.get("attention_mask")
    max_length = vocab = None
    if step_config is not None:
        for step in model.config.ensemble_scheduling.step:
            config = step_config(step.model_name)
            if config is not None and (config.backend or config.platform) == TOKENIZER_BACKEND:
                params = {k: v.string_value for k, v in config.parameters.items()}
                max_length = _int_or_none(params.get("max_length"))
                vocab = _int_or_none(params.get("vocab_size"))
    return EmbeddingModel(
        name=model.name,
        text_input=text[0],
        output=vector.name,
        dims=vector.dims[0],
        max_rows=mbs,
        count_output="token_count" if count is not None and count.datatype == "INT64" else None,
        ids_inputs=("input_ids", "attention_mask")
        if ids is not None and mask is not None and ids.datatype == mask.datatype == "INT64"
        else None,
        max_length=max_length,
        vocab_size=vocab,
    )


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # FP32 [N, dimensions], each row of L2 norm 1 (or all zeros)
    token_counts: list[int]  # per input; zeros when the model counts no tokens


class EmbeddingsService:
    """Embedding requests on the data plane's models."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane
        self._described: dict[str, tuple[ModelVersion, EmbeddingModel | None]] = {}

    def model_names(self) -> list[str]:
        """The ready embedding models (ensembles, not their steps: those take no text)."""
        names = dict.fromkeys(r["name"] for r in self.dataplane.repository_index(ready_only=True))
        found = []
        for name in names:
            try:
                if self._describe(name) is not None:
                    found.append(name)
            except AccelServeError:
                continue  # unloaded meanwhile
        return found

    def model(self, name: str) -> EmbeddingModel:
        """The embedding model ``name``; raises ``EmbeddingModelNotFoundError`` when there is
        none (other data-plane errors, e.g. unavailable, pass through)."""
        try:
            info = self._describe(name)
        except AccelServeError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise EmbeddingModelNotFoundError(f"The model '{name}' does not exist") from None
            raise
        if info is None:
            raise EmbeddingModelNotFoundError(
                f"The model '{name}' is not an embedding model (it needs a BYTES [1] text "
                "input and an FP32 vector output)"
            )
        return info

    def _describe(self, name: str) -> EmbeddingModel | None:
        model = self.dataplane.model(name)
        cached = self._described.get(name)
        if cached is not None and cached[0] is model:
            return cached[1]
        info = describe(model, self._step_config)
        self._described[name] = (model, info)
        return info

    def _step_config(self, name: str) -> ModelConfig | None:
        try:
            return self.dataplane.model(name).config
        except AccelServeError:
            return None

    async def embed_texts(
        self, info: EmbeddingModel, texts: list[str], dimensions: int | None = None
    ) -> Embeddings:
        """Embed non-empty texts; raises ``ContextLengthError`` for one that is too long."""
        chunks = [texts[i : i + info.max_rows] for i in range(0, len(texts), info.max_rows)]
        outputs = [info.output, *([info.count_output] if info.count_output else [])]

        def request(chunk: list[str]) -> InferRequest:
            array = np.empty((len(chunk), 1), dtype=object)
            array[:, 0] = [t.encode() for t in chunk]
            return InferRequest(inputs={info.text_input: array}, outputs=list(outputs))

        results = await self._infer_all(info, [request(c) for c in chunks])
        vectors = np.concatenate([r[info.output] for r in results])
        if info.count_output is None:
            return Embeddings(_keep(vectors, info, dimensions), [0] * len(texts))
        counts = [int(c) for r in results for c in r[info.count_output].reshape(-1)]
        if info.max_length is not None:
            for i, count in enumerate(counts):
                if count > info.max_length:
                    raise ContextLengthError(
                        f"input[{i}] is {count} tokens long; model '{info.name}' accepts at most "
                        f"{info.max_length} tokens per input. Shorten it or split it."
                    )
        return Embeddings(_keep(vectors, info, dimensions), counts)

    async def embed_tokens(
        self, info: EmbeddingModel, tokens: list[list[int]], dimensions: int | None = None
    ) -> Embeddings:
        """Embed non-empty token lists (checked with ``EmbeddingModel.check_token_ids``)."""
        if info.ids_inputs is None:
            raise EmbeddingInputError(
                f"model '{info.name}' does not accept token ids; send text instead"
            )
        ids_name, mask_name = info.ids_inputs
        requests = []
        for start in range(0, len(tokens), info.max_rows):
            chunk = tokens[start : start + info.max_rows]
            width = max(len(t) for t in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            for row, seq in enumerate(chunk):
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            requests.append(
                InferRequest(inputs={ids_name: ids, mask_name: mask}, outputs=[info.output])
            )
        results = await self._infer_all(info, requests)
        vectors = np.concatenate([r[info.output] for r in results])
        return Embeddings(_keep(vectors, info, dimensions), [len(t) for t in tokens])

    async def _infer_all(
        self, info: EmbeddingModel, requests: list[InferRequest]
    ) -> list[dict[str, np.ndarray]]:
        calls = [self.dataplane.infer(info.name, "", r) for r in requests]
        responses = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        return [r.outputs for r in responses]


def _keep(vectors: np.ndarray, info: EmbeddingModel, dimensions: int | None) -> np.ndarray:
    """The first ``dimensions`` components of each (normalized) vector, normalized again."""
    if dimensions is None or dimensions >= info.dims:
        return vectors
    result: np.ndarray = kernels.l2_normalize(vectors[:, :dimensions], axis=-1, eps=1e-12)
    return result
