"""OpenAI-compatible embeddings: ``POST /v1/embeddings``, ``GET /v1/models[/{id}]``.

An adapter like the V2 frontend: OpenAI's wire format and error shape only. Which models
embed (text as a BYTES ``[1]`` input to an FP32 ``[H]`` vector), chunking, padding and
renormalizing are ``services.embeddings``, which runs the data plane. Inputs: a
string, a list of strings, a list of token ids or a list of lists of token ids (used as given:
include the model's special tokens, as ``tokenizer.encode`` returns them); at most 2048.
``encoding_format`` ``float`` or ``base64`` (little-endian float32); ``dimensions`` keeps the
first N components and renormalizes. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.

Authentication: set ``ACCELSERVE_OPENAI_API_KEY`` and every ``/v1`` request must send
``Authorization: Bearer <key>``; unset, the endpoints are open (as the V2 ones are).
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
import time
from typing import Any

import orjson

from accelserve.dataplane import DataPlane
from accelserve.errors import AccelServeError, InvalidArgumentError
from accelserve.frontends.errors import (
    MethodNotAllowedError,
    bearer_token,
    expect_method,
    http_status,
)
from accelserve.frontends.http_limits import RETRY_AFTER
from accelserve.services.embeddings import (
    ContextLengthError,
    EmbeddingInputError,
    EmbeddingModel,
    EmbeddingModelNotFoundError,
    EmbeddingsService,
)

log = logging.getLogger("accelserve.openai")

Response = tuple[int, list[tuple[bytes, bytes]], bytes]
JSON = [(b"content-type", b"application/json")]
MAX_INPUTS = 2048
ENV_API_KEY = "ACCELSERVE_OPENAI_API_KEY"


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or []
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
        headers = JSON + self.headers
        if self.status == 503:  # overloaded or not ready: a state that passes, so say when
            headers = [*headers, RETRY_AFTER]
        return self.status, headers, orjson.dumps(body)


def _bad(message: str, param: str | None = "input", code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param, code)


class OpenAIFrontend:
    def __init__(self, dataplane: DataPlane, api_key: str | None = None) -> None:
        self.service = EmbeddingsService(dataplane)
        self.api_key = api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None
        self.created = int(time.time())

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
        values = [value for name, value in headers if name == b"authorization"]
        given = bearer_token(values[-1]) if values else None
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
            expect_method(method, "POST", path)
            return await self.embeddings(body)
        if path == "/v1/models":
            expect_method(method, "GET", path)
            data = [self._model_object(name) for name in self.service.model_names()]
            return 200, JSON, orjson.dumps({"object": "list", "data": data})
        if path.startswith("/v1/models/"):
            expect_method(method, "GET", path)
            name = path.removeprefix("/v1/models/")
            self._resolve(name, param=None)
            return 200, JSON, orjson.dumps(self._model_object(name))
        raise OpenAIError(404, f"Unknown request URL: {method} {path}", None, "unknown_url")

    def _model_object(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "accelserve"}

    def _resolve(self, name: Any, param: str | None = "model") -> EmbeddingModel:
        if not isinstance(name, str) or not name:
            raise _bad("'model' is required: the name of an embedding model", "model")
        try:
            return self.service.model(name)
        except EmbeddingModelNotFoundError as exc:
            raise OpenAIError(404, exc.message, param, "model_not_found") from None

    # -- POST /v1/embeddings -----------------------------------------------------------------

    async def embeddings(self, body: bytes) -> Response:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _bad(f"the request body is not valid JSON: {exc}", None) from None
        if not isinstance(request, dict):
            raise _bad("the request body must be a JSON object", None)
        info = self._resolve(request.get("model"))
        try:
            encoding = request.get("encoding_format")
            if encoding is None:
                encoding = "float"
            elif encoding not in ("float", "base64"):  # '', false, 0 are not a format either
                raise _bad(
                    f"encoding_format: expected 'float' or 'base64'; received {encoding!r}",
                    "encoding_format",
                )
            user = request.get("user")
            if user is not None and not isinstance(user, str):  # accepted and unused, but typed
                raise _bad(f"user: expected a string; received {_kind(user)}", "user")
            dimensions = info.check_dimensions(request.get("dimensions"))
            texts, tokens = _parse_input(request.get("input"), info)
        except (OpenAIError, AccelServeError) as exc:  # rejected before the model: counted
            rejected = InvalidArgumentError(str(exc))
            self.service.dataplane.record_failure(info.name, "", rejected)
            raise
        if texts is not None:
            result = await self.service.embed_texts(info, texts, dimensions)
        else:
            assert tokens is not None
            result = await self.service.embed_tokens(info, tokens, dimensions)
        vectors = result.vectors
        if encoding == "base64":
            little = vectors.astype("<f4", copy=False)
            items: list[Any] = [base64.b64encode(row.tobytes()).decode() for row in little]
        else:
            items = list(vectors)
        used = sum(result.token_counts)
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
    try:  # the model's limits are the service's; here they become this element's 400
        info.check_token_ids(ids, where)
    except AccelServeError as exc:
        raise _from_accelserve(exc) from None
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


def _from_accelserve(exc: AccelServeError) -> OpenAIError:
    status = http_status(exc)
    if status >= 500:
        return OpenAIError(status, exc.message, None, None, "server_error")
    if isinstance(exc, MethodNotAllowedError):
        return OpenAIError(
            status, exc.message, None, "method_not_allowed", headers=exc.allow_header()
        )
    if isinstance(exc, EmbeddingInputError):
        code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else None
        return OpenAIError(status, exc.message, exc.field, code)
    return OpenAIError(status, exc.message, None, None)
