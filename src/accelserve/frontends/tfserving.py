"""TensorFlow Serving's REST API on the HTTP port, for every model of the repository.

Routes (tensorflow.org/tfx/serving/api_rest), ``[/versions/{v}]`` optional everywhere:
``GET /v1/models/{m}`` (status: ``model_version_status``), ``GET /v1/models/{m}/metadata``
(the ``serving_default`` signature built from the config), ``POST /v1/models/{m}:predict`` (row
and columnar formats, ``codecs.tfserving_json``), and ``:classify``/``:regress``, which answer
400: they run tf.Example through a SavedModel's classify or regress signature, and the models
here have only a predict signature. ``/labels/{l}`` is parsed and answered 404 (no labels).
Errors are TF Serving's ``{"error": "..."}`` with the status of their ``AccelServeError``.

``/v1/models/{m}`` is OpenAI's route too (``GET /v1/models/{id}``): this adapter answers it with
the TF Serving status and, when the OpenAI frontend (``fallback``) knows the model, that
frontend's fields beside it, so both clients read what they expect. Every other path that is not
TF Serving's goes to ``fallback``.
"""

from __future__ import annotations

import logging

import orjson

from accelserve.codecs.tfserving import (
    as_json,
    check_signature,
    model_spec,
    model_status,
    no_labels,
    no_signature_for,
    parse_version,
    signature_def_map,
)
from accelserve.codecs.tfserving_json import decode_predict, encode_error, encode_predict
from accelserve.dataplane import DataPlane
from accelserve.errors import AccelServeError, ModelNotFoundError
from accelserve.frontends.errors import error_headers, expect_method, http_status
from accelserve.frontends.http import ExtraHandler
from accelserve.frontends.http_server import Headers, Response
from accelserve.types import InferRequest

log = logging.getLogger("accelserve.tfserving")

JSON = [(b"content-type", b"application/json")]
PREFIX = "/v1/models/"
VERBS = ("predict", "classify", "regress")
UNKNOWN = "?"  # a path with a ':' verb TF Serving does not have


class TFServingFrontend:
    def __init__(self, dataplane: DataPlane, fallback: ExtraHandler | None = None) -> None:
        self.dataplane = dataplane
        self.fallback = fallback

    async def __call__(
        self, method: str, path: str, headers: Headers, body: bytes
    ) -> Response | None:
        route = _parse(path)
        if route is None:
            return await self._fallback(method, path, headers, body)
        name, version, label, action = route
        try:
            if action == UNKNOWN:
                raise ModelNotFoundError(
                    f"no route for {method} {path}; expected /v1/models/<model>[/versions/<n>]"
                    f":predict, :classify or :regress"
                )
            if label:
                raise no_labels(name, label)
            version = parse_version(version) if version else ""
            if action in VERBS:
                expect_method(method, "POST", path)
                return await self._post(action, name, version, body)
            expect_method(method, "GET", path)
            if action == "metadata":
                return self._metadata(name, version)
            status = as_json(model_status(self.dataplane.repository_index(), name, version))
            if not version and self.fallback is not None:  # OpenAI's GET /v1/models/{id}
                status = {**await self._openai_fields(method, path, headers, body), **status}
            return 200, JSON, orjson.dumps(status)
        except AccelServeError as exc:
            return http_status(exc), JSON + error_headers(exc), encode_error(exc.message)
        except Exception:  # never a stack trace to the client
            log.exception("unhandled error on %s %s", method, path)
            return 500, JSON, encode_error("internal server error")

    async def _fallback(
        self, method: str, path: str, headers: Headers, body: bytes
    ) -> Response | None:
        return None if self.fallback is None else await self.fallback(method, path, headers, body)

    async def _openai_fields(
        self, method: str, path: str, headers: Headers, body: bytes
    ) -> dict[str, object]:
        answer = await self._fallback(method, path, headers, body)
        if answer is None or answer[0] != 200 or not isinstance(answer[2], bytes):
            return {}
        fields = orjson.loads(answer[2])
        return fields if isinstance(fields, dict) else {}

    async def _post(self, action: str, name: str, version: str, body: bytes) -> Response:
        model = self.dataplane.model(name, version)  # unknown model or version: 404
        if action != "predict":
            raise no_signature_for(name, action)
        request = decode_predict(body, model.inputs)
        check_signature(request.signature_name)
        response = await self.dataplane.infer(name, version, InferRequest(request.inputs))
        outputs = response.outputs
        ordered = {n: outputs[n] for n in model.outputs if n in outputs}
        return 200, JSON, encode_predict(request.format, ordered)

    def _metadata(self, name: str, version: str) -> Response:
        model = self.dataplane.model(name, version)
        signatures = signature_def_map(
            model.inputs.values(), model.outputs.values(), model.config.max_batch_size
        )
        data = {
            "model_spec": as_json(model_spec(name, model.version)),
            "metadata": {"signature_def": as_json(signatures)},
        }
        return 200, JSON, orjson.dumps(data)


def _parse(path: str) -> tuple[str, str, str, str] | None:
    """(model, version, label, action) of a TF Serving path, None for any other path. The
    action is a verb (predict, classify, regress), "metadata", "" (status) or UNKNOWN."""
    if not path.startswith(PREFIX):
        return None
    rest, colon, verb = path[len(PREFIX) :].partition(":")
    parts = rest.split("/")
    name, tail = parts[0], parts[1:]
    if not name:
        return None
    version = label = ""
    if len(tail) >= 2 and tail[0] in ("versions", "labels"):
        version, label = (tail[1], "") if tail[0] == "versions" else ("", tail[1])
        tail = tail[2:]
    if colon:
        return name, version, label, verb if not tail and verb in VERBS else UNKNOWN
    if tail == ["metadata"]:
        return name, version, label, "metadata"
    if tail:
        return None
    return name, version, label, ""
