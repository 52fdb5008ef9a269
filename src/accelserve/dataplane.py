"""The data plane: the one surface every frontend (HTTP, gRPC, OpenAI) calls.

Frontends decode their wire format into ``InferRequest`` objects and map ``AccelServeError``
codes to status codes; everything else (model-name and request validation, routing to the
model's scheduler, statistics, repository control) happens here once.

Every failed inference request is counted under one of Triton's failure reasons
(``stats.failure_reason``): in the model version's statistics when the request named a READY
model (the runner counts what fails from its admission on, this module what fails before it,
and the frontends report their decoding failures through ``record_failure``); otherwise (an
invalid or unknown model name or version, a model that is not READY, a message that names no
model, a request the HTTP server refused before routing it) in the server-wide
``failures_without_model``, which /metrics exports as
``accelserve_inference_request_failure_no_model``.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from accelserve.classification import classify, requested_classes
from accelserve.config import config_to_json
from accelserve.errors import (
    AccelServeError,
    InvalidArgumentError,
    ModelNotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from accelserve.load_overrides import LoadOverride, parse_load_parameters
from accelserve.model import READY, ModelRecord, ModelVersion
from accelserve.names import check_model_name
from accelserve.shared_memory import SharedMemoryRegistry
from accelserve.stats import ModelStats, failure_reason
from accelserve.types import InferRequest, InferResponse, StreamResponse
from accelserve.validation import prepare_inputs
from accelserve.version import __version__

EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "generate",
    "model_configuration",
    "model_repository",
    "parameters",
    "schedule_policy",
    "statistics",
    "system_shared_memory",
]


class ModelRegistry(Protocol):
    """What the data plane needs of the model repository: ``ModelRepository`` is one (so the
    data plane never imports it), and unit tests serve models from a dict through another."""

    @property
    def models(self) -> Mapping[str, ModelRecord]: ...

    def get(self, name: str, version: str = "") -> ModelVersion:
        """The READY version (latest when ``version`` is empty): ModelNotFoundError for an
        unknown model or version, UnavailableError for a model that is not READY."""
        ...

    def index(self) -> list[dict[str, str]]: ...

    async def load(self, name: str, override: LoadOverride | None = None) -> ModelRecord: ...

    async def unload(self, name: str) -> None: ...


class DataPlane:
    def __init__(
        self,
        repository: ModelRegistry,
        *,
        model_control: bool = False,
        api_key: str | None = None,
    ) -> None:
        if model_control and not api_key:
            raise ValueError("model control needs an API key (--api-key or ACCELSERVE_API_KEY)")
        self.repository = repository
        self.model_control = model_control
        self.api_key = api_key
        self.started = False
        self.stopping = False
        # reason -> failed inference requests that named no READY model (see the module doc)
        self.failures_without_model: dict[str, int] = {}
        # the regions clients registered (Triton's shared-memory extension), for every frontend
        self.shared_memory = SharedMemoryRegistry()
        # inference requests admitted and not yet answered, from every frontend (what a Ray
        # replica reports to Serve's autoscaler: deploy.autoscale)
        self.requests_in_flight = 0

    # -- health and metadata -------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.started and not self.stopping

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "accelserve", "version": __version__, "extensions": EXTENSIONS}

    def check_name(self, name: str) -> None:
        """InvalidArgumentError for a name that cannot be a model's (``names``); a known
        model's name passed that check when it was loaded, so the hot path skips it."""
        if name not in self.repository.models:
            check_model_name(name)

    def model_ready(self, name: str, version: str = "") -> bool:
        self.check_name(name)
        try:
            self.repository.get(name, version)
        except (ModelNotFoundError, UnavailableError):
            return False
        return not self.stopping

    def known_model_ready(self, name: str, version: str = "") -> bool:
        """``model_ready``, except that a model name the server does not know is
        ModelNotFoundError (V2's ready routes answer 404 for it, and not-ready for the rest)."""
        self.check_name(name)
        if name not in self.repository.models:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' is not found")
        return self.model_ready(name, version)

    def model(self, name: str, version: str = "") -> ModelVersion:
        self.check_name(name)
        return self.repository.get(name, version)

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model = self.model(name, version)
        record = self.repository.models[name]
        mbs = model.config.max_batch_size
        return {
            "name": name,
            "versions": sorted(record.versions, key=int),
            "platform": model.platform,
            "inputs": [spec.as_metadata(mbs) for spec in model.inputs.values()],
            "outputs": [spec.as_metadata(mbs) for spec in model.outputs.values()],
        }

    def model_config(self, name: str, version: str = "") -> dict[str, Any]:
        model = self.model(name, version)
        data = config_to_json(model.config)
        data["instances"] = model.placement()  # accelserve extension: where each instance lives
        return data

    # -- inference --------------------------------------------------------------------------

    async def infer(self, name: str, version: str, request: InferRequest) -> InferResponse:
        model = self._admitted(name, version, request)
        self.requests_in_flight += 1
        try:
            outputs = await model.runner.infer(request)  # counts its own failures
        finally:
            self.requests_in_flight -= 1
        return InferResponse(name, model.version, _requested(model, request, outputs), request.id)

    async def infer_stream(
        self, name: str, version: str, request: InferRequest
    ) -> AsyncIterator[StreamResponse]:
        """The responses to one request, as the model sends them: a decoupled model's (Triton's
        ``model_transaction_policy { decoupled: true }``) zero or more then the final flag; any
        other model's one response, final. An error raised here is the request's refusal."""
        model = self._admitted(name, version, request)
        stream = getattr(model.runner, "infer_stream", None)
        self.requests_in_flight += 1
        try:
            if stream is None:
                outputs = _requested(model, request, await model.runner.infer(request))
                yield StreamResponse(name, model.version, request.id, outputs, True)
                return
            async for part in stream(request):
                yield part
        finally:
            self.requests_in_flight -= 1

    def _admitted(self, name: str, version: str, request: InferRequest) -> ModelVersion:
        """The READY version, with ``request`` checked against its config (failures counted)."""
        if self.stopping:
            error = UnavailableError("the server is shutting down and accepts no new requests")
            self.record_failure(name, version, error)
            raise error
        start = time.perf_counter_ns()
        try:
            self.check_name(name)
            model = self.repository.get(name, version)
        except AccelServeError as exc:
            self._count_without_model(exc)
            raise
        try:
            prepare_inputs(model, request)
        except AccelServeError as exc:
            model.stats.record_failure(failure_reason(exc), time.perf_counter_ns() - start)
            raise
        return model

    def record_failure(self, name: str, version: str, exc: BaseException) -> None:
        """Count an inference request that failed in a frontend, before ``infer`` (a body
        that does not decode), under the model it names when that model is READY."""
        try:
            self.check_name(name)
            stats = self.repository.get(name, version).stats
        except AccelServeError:
            self._count_without_model(exc)
            return
        stats.record_failure(failure_reason(exc), 0)

    def record_refused(self, status: int) -> None:
        """Count a request the HTTP server refused before any route saw it (malformed, a head
        too large or too slow, a connection or body cap): no model is named, so server-wide;
        REJECTED, or OTHER for the server's own fault."""
        reason = "OTHER" if status >= 500 and status != 503 else "REJECTED"
        self.failures_without_model[reason] = self.failures_without_model.get(reason, 0) + 1

    def _count_without_model(self, exc: BaseException) -> None:
        reason = failure_reason(exc)
        self.failures_without_model[reason] = self.failures_without_model.get(reason, 0) + 1

    # -- statistics -------------------------------------------------------------------------

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        if name:
            self.model(name, version)  # 404/503 for unknown or unavailable models
            record = self.repository.models[name]
            versions = [record.versions[version]] if version else list(record.versions.values())
        else:
            versions = self._versions(ready_only=True)
        return {"model_stats": [_version_stats(v) for v in versions]}

    def version_stats(self, ready_only: bool = True) -> list[ModelStats]:
        """The live ``ModelStats`` of every version of every READY model (of every model
        when not ``ready_only``): what the metrics endpoint reads, from its own thread."""
        return [v.stats for v in self._versions(ready_only)]

    def _versions(self, ready_only: bool) -> list[ModelVersion]:
        # list() copies under the GIL: the event loop may load or unload models meanwhile.
        records = list(self.repository.models.values())
        return [
            v
            for r in records
            if r.state == READY or not ready_only
            for v in list(r.versions.values())
        ]

    # -- repository control -----------------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        rows = self.repository.index()
        return [r for r in rows if r["state"] == READY] if ready_only else rows

    def authorize_control(self, api_key: str | None) -> None:
        if not self.model_control:
            raise PermissionDeniedError(
                "model control is disabled; start the server with --model-control-mode explicit "
                "and an --api-key to load and unload models"
            )
        if api_key is None:
            raise UnauthenticatedError(
                "model control needs an API key: send 'Authorization: Bearer <key>'"
            )
        assert self.api_key is not None
        if not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
            raise UnauthenticatedError("the API key is not valid")

    async def load_model(
        self, name: str, api_key: str | None, parameters: Mapping[str, object] | None = None
    ) -> None:
        """Load (or reload) a model; ``parameters`` are Triton's load parameters (a ``config``
        override, ``file:<version>/<name>`` contents as bytes: ``load_overrides``)."""
        self.authorize_control(api_key)
        check_model_name(name)
        override = parse_load_parameters(name, parameters) if parameters else None
        # Shielded: a client that goes away mid-load cancels its request, never the load.
        load = (
            self.repository.load(name) if override is None else self.repository.load(name, override)
        )
        record = await asyncio.shield(load)
        if record.state != READY:
            raise InvalidArgumentError(f"failed to load '{name}': {record.reason}")

    async def unload_model(self, name: str, api_key: str | None) -> None:
        self.authorize_control(api_key)
        check_model_name(name)
        await asyncio.shield(self.repository.unload(name))


def _version_stats(version: ModelVersion) -> dict[str, Any]:
    data = version.stats.as_dict()
    data["memory_usage"] = version.memory_usage()  # Triton's field: device memory per instance
    return data


def _requested(
    model: ModelVersion, request: InferRequest, outputs: dict[str, Any]
) -> dict[str, Any]:
    """The outputs the request asked for (all when it named none), each as asked: Triton's
    classification extension turns one into its top-k "value:index:label" strings."""
    if not request.outputs:
        return outputs
    chosen = {n: outputs[n] for n in request.outputs}
    classes = requested_classes(request.outputs)
    batched = model.config.max_batch_size > 0
    for name, k in classes.items():
        chosen[name] = classify(name, chosen[name], k, model.labels.get(name, []), batched)
    return chosen
