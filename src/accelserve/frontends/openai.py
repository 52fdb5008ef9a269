"""OpenAI-compatible embeddings: ``POST /v1/embeddings``, ``GET /v1/models[/{id}]``.

An adapter like the V2 frontend: the request becomes ``DataPlane.infer`` calls on the named
model, which must take text as a BYTES ``[1]`` input and give an FP32 ``[H]`` embedding (the
``minilm`` ensemble; anything ``accelserve export sentence-transformer`` writes). Inputs: a
string, a list of strings, a list of token ids or a list of lists of token ids (used as given:
include the model's special tokens, as ``tokenizer.encode`` returns them); at most 2048.
``encoding_format`` ``float`` or ``base64`` (little-endian float32); ``dimensions`` keeps the
first N components and renormalizes. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.

Authentication: set ``ACCELSERVE_OPENAI_API_KEY`` and every ``/v1`` request must send
``Authorization: Bearer <key>``; unset, the endpoints are open (as the V2 ones are).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from accelserve.dataplane import DataPlane
from accelserve.errors import AccelServeError, ErrorCode
from accelserve.model import ModelVersion
from accelserve.types import InferRequest

log = logging.getLogger("accelserve.openai")

Response = tuple[int, list[tuple[bytes, bytes]], bytes]
JSON = [(b"content-type", b"application/json")]
MAX_INPUTS = 2048
ENV_API_KEY = "ACCELSERVE_OPENAI_API_KEY"
TOKENIZER_BACKEND = "accelserve_tokenizer"
_STATUS = {
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RESOURCE_EXHAUSTED: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = (
            status,
            message,
            param,
            code,
            kind,
        )

    def response(self) -> Response:
        body = {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
        return self.status, JSON, orjson.dumps(body)


def _bad(message: str, param: str | None = "input", code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param, code)


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


def describe(model: ModelVersion, step_config: Any = None) -> EmbeddingModel | None:
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


class OpenAIFrontend:
    def __init__(self, dataplane: DataPlane, api_key: str | None = None) -> None:
        self.dataplane = dataplane
        self.api_key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
        self.created = int(time.time())
        self._described: dict[str, tuple[ModelVersion, EmbeddingModel | None]] = {}

    async def __call__(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Response | None:
        if path != "/v1" and not path.startswith("/v1/"):
            return None  # not ours: the HTTP frontend answers 404
        try:
            self._authorize(headers)
            return await self._route(method, path.rstrip("/"), body)
        except OpenAIError as exc:
            return exc.response()
        except AccelServeError as exc:
            return _from_accelserve(exc).response()
        except Exception:  # never a stack trace to the client
            log.exception("unhandled error on %s %s", method, path)
            return OpenAIError(500, "internal server error", None, None, "server_error").response()

    def _authorize(self, headers: list[tuple[bytes, bytes]]) -> None:
        if self.api_key is None:
            return
        given = None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                given = token.strip() if scheme.lower() == "bearer" else None
        if not given:
            raise OpenAIError(
                401,
                "You didn't provide an API key: send 'Authorization: Bearer <key>'",
                None,
                "missing_api_key",
            )
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise OpenAIError(401, "Incorrect API key provided", None, "invalid_api_key")

    async def _route(self, method: str, path: str, body: bytes) -> Response:
        if path == "/v1/embeddings":
            _expect(method, "POST", path)
            return await self.embeddings(body)
        if path == "/v1/models":
            _expect(method, "GET", path)
            data = [self._model_object(name) for name in self._embedding_models()]
            return 200, JSON, orjson.dumps({"object": "list", "data": data})
        if path.startswith("/v1/models/"):
            _expect(method, "GET", path)
            name = path.removeprefix("/v1/models/")
            self._resolve(name, param=None)
            return 200, JSON, orjson.dumps(self._model_object(name))
        raise OpenAIError(404, f"Unknown request URL: {method} {path}", None, "unknown_url")

    def _model_object(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "accelserve"}

    def _embedding_models(self) -> list[str]:
        names = dict.fromkeys(r["name"] for r in self.dataplane.repository_index(ready_only=True))
        found = []
        for name in names:
            try:
                if self._describe(name) is not None:
                    found.append(name)
            except AccelServeError:
                continue  # unloaded meanwhile
        return found

    def _describe(self, name: str) -> EmbeddingModel | None:
        model = self.dataplane.model(name)
        cached = self._described.get(name)
        if cached is not None and cached[0] is model:
            return cached[1]
        info = describe(model, self._step_config)
        self._described[name] = (model, info)
        return info

    def _step_config(self, name: str) -> Any:
        try:
            return self.dataplane.model(name).config
        except AccelServeError:
            return None

    def _resolve(self, name: Any, param: str | None = "model") -> EmbeddingModel:
        if not isinstance(name, str) or not name:
            raise _bad("'model' is required: the name of an embedding model", "model")
        try:
            info = self._describe(name)
        except AccelServeError as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                raise OpenAIError(
                    404, f"The model '{name}' does not exist", param, "model_not_found"
                ) from None
            raise
        if info is None:
            raise OpenAIError(
                404,
                f"The model '{name}' is not an embedding model (it needs a BYTES [1] text "
                "input and an FP32 vector output)",
                param,
                "model_not_found",
            )
        return info

    # -- POST /v1/embeddings -----------------------------------------------------------------

    async def embeddings(self, body: bytes) -> Response:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _bad(f"the request body is not valid JSON: {exc}", None) from None
        if not isinstance(request, dict):
            raise _bad("the request body must be a JSON object", None)
        info = self._resolve(request.get("model"))
        encoding = request.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise _bad(
                f"encoding_format: expected 'float' or 'base64'; received {encoding!r}",
                "encoding_format",
            )
        dimensions = request.get("dimensions")
        if dimensions is not None and (
            type(dimensions) is not int or not 1 <= dimensions <= info.dims
        ):
            raise _bad(
                f"dimensions: expected an integer from 1 to {info.dims} (the size of "
                f"'{info.name}' embeddings); received {dimensions!r}",
                "dimensions",
            )
        texts, tokens = _parse_input(request.get("input"), info)
        if texts is not None:
            vectors, counts = await self._run_texts(info, texts)
        else:
            assert tokens is not None
            vectors, counts = await self._run_tokens(info, tokens)
        if dimensions is not None and dimensions < info.dims:
            vectors = np.ascontiguousarray(vectors[:, :dimensions])
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors /= np.maximum(norms, 1e-12)
        if encoding == "base64":
            little = vectors.astype("<f4", copy=False)
            items: list[Any] = [base64.b64encode(row.tobytes()).decode() for row in little]
        else:
            items = list(vectors)
        used = int(sum(counts))
        payload = {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": item}
                for i, item in enumerate(items)
            ],
            "model": info.name,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }
        return 200, JSON, orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)

    async def _run_texts(
        self, info: EmbeddingModel, texts: list[str]
    ) -> tuple[np.ndarray, list[int]]:
        chunks = [texts[i : i + info.max_rows] for i in range(0, len(texts), info.max_rows)]
        outputs = [info.output, *([info.count_output] if info.count_output else [])]

        def request(chunk: list[str]) -> InferRequest:
            array = np.empty((len(chunk), 1), dtype=object)
            array[:, 0] = [t.encode() for t in chunk]
            return InferRequest(inputs={info.text_input: array}, outputs=list(outputs))

        results = await self._infer_all(info, [request(c) for c in chunks])
        vectors = np.concatenate([r[info.output] for r in results])
        if info.count_output is None:
            return vectors, [0] * len(texts)
        counts = [int(c) for r in results for c in r[info.count_output].reshape(-1)]
        if info.max_length is not None:
            for i, count in enumerate(counts):
                if count > info.max_length:
                    raise _bad(
                        f"input[{i}] is {count} tokens long; model '{info.name}' accepts at most "
                        f"{info.max_length} tokens per input. Shorten it or split it.",
                        "input",
                        "context_length_exceeded",
                    )
        return vectors, counts

    async def _run_tokens(
        self, info: EmbeddingModel, tokens: list[list[int]]
    ) -> tuple[np.ndarray, list[int]]:
        if info.ids_inputs is None:
            raise _bad(f"model '{info.name}' does not accept token ids; send text instead")
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
        return np.concatenate([r[info.output] for r in results]), [len(t) for t in tokens]

    async def _infer_all(
        self, info: EmbeddingModel, requests: list[InferRequest]
    ) -> list[dict[str, np.ndarray]]:
        calls = [self.dataplane.infer(info.name, "", r) for r in requests]
        responses = [await calls[0]] if len(calls) == 1 else await asyncio.gather(*calls)
        return [r.outputs for r in responses]


def _parse_input(
    value: Any, info: EmbeddingModel
) -> tuple[list[str] | None, list[list[int]] | None]:
    """(texts, None) or (None, token lists); raises OpenAI-shaped 400s naming the element."""
    if value is None:
        raise _bad("'input' is required: a string, a list of strings or token ids")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _bad(
            "input: expected a non-empty string, list of strings, list of token ids or list "
            f"of lists of token ids; received {_kind(value)}"
        )
    if len(value) > MAX_INPUTS:
        raise _bad(f"input: at most {MAX_INPUTS} inputs per request; received {len(value)}")
    first = value[0]
    if isinstance(first, str):
        for i, text in enumerate(value):
            if not isinstance(text, str):
                raise _bad(f"input[{i}]: expected a string like input[0]; received {_kind(text)}")
            if not text:
                raise _bad(f"input[{i}] is an empty string; every input must have text")
        return value, None
    if _is_id(first):
        return None, [_token_list(value, "input", info)]
    if isinstance(first, list):
        lists = []
        for i, item in enumerate(value):
            if not isinstance(item, list):
                raise _bad(
                    f"input[{i}]: expected a list of token ids like input[0]; received {_kind(item)}"
                )
            lists.append(_token_list(item, f"input[{i}]", info))
        return None, lists
    raise _bad(
        "input: expected a string, a list of strings, a list of token ids or a list of lists "
        f"of token ids; input[0] is {_kind(first)}"
    )


def _token_list(ids: list[Any], where: str, info: EmbeddingModel) -> list[int]:
    if not ids:
        raise _bad(f"{where} is an empty list of token ids; every input must have tokens")
    for j, token in enumerate(ids):
        if not _is_id(token):
            raise _bad(f"{where}[{j}]: expected a token id (an integer); received {_kind(token)}")
    vocab = info.vocab_size
    if vocab is not None:
        bad = next((t for t in ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise _bad(
                f"{where}: token id {bad} is outside 0..{vocab - 1} (the vocabulary of '{info.name}')"
            )
    if info.max_length is not None and len(ids) > info.max_length:
        raise _bad(
            f"{where} is {len(ids)} tokens long; model '{info.name}' accepts at most "
            f"{info.max_length} tokens per input",
            "input",
            "context_length_exceeded",
        )
    return ids


def _is_id(value: Any) -> bool:
    return type(value) is int


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an empty list" if not value else "a list"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _expect(method: str, expected: str, path: str) -> None:
    if method != expected:
        raise OpenAIError(
            405,
            f"method {method} is not allowed on {path}; expected {expected}",
            None,
            "method_not_allowed",
        )


def _from_accelserve(exc: AccelServeError) -> OpenAIError:
    status = _STATUS.get(exc.code, 500)
    if status >= 500:
        return OpenAIError(status, exc.message, None, None, "server_error")
    return OpenAIError(status, exc.message, None, None)
