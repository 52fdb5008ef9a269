"""The data plane: the one surface every frontend (HTTP, gRPC, OpenAI) calls.

Frontends decode their wire format into ``InferRequest`` objects and map ``AccelServeError``
codes to status codes; everything else (validation against the model config, routing to the
model's scheduler, statistics, repository control) happens here once.
"""

from __future__ import annotations

import hmac
from typing import Any

import numpy as np

from accelserve import __version__
from accelserve.config import config_to_json
from accelserve.errors import (
    InvalidArgumentError,
    ModelNotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
    UnavailableError,
)
from accelserve.repository import READY, ModelRepository, ModelVersion
from accelserve.types import InferRequest, InferResponse, TensorSpec, v2_datatype

EXTENSIONS = [
    "binary_tensor_data",
    "model_configuration",
    "model_repository",
    "parameters",
    "schedule_policy",
    "statistics",
]


class DataPlane:
    def __init__(
        self,
        repository: ModelRepository,
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

    # -- health and metadata -------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return self.started and not self.stopping

    def server_metadata(self) -> dict[str, Any]:
        return {"name": "accelserve", "version": __version__, "extensions": EXTENSIONS}

    def model_ready(self, name: str, version: str = "") -> bool:
        try:
            self.repository.get(name, version)
        except (ModelNotFoundError, UnavailableError):
            return False
        return not self.stopping

    def model(self, name: str, version: str = "") -> ModelVersion:
        return self.repository.get(name, version)

    def model_metadata(self, name: str, version: str = "") -> dict[str, Any]:
        model = self.repository.get(name, version)
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
        model = self.repository.get(name, version)
        data = config_to_json(model.config)
        data["instances"] = model.placement()  # accelserve extension: where each instance lives
        return data

    # -- inference --------------------------------------------------------------------------

    async def infer(self, name: str, version: str, request: InferRequest) -> InferResponse:
        if self.stopping:
            raise UnavailableError("the server is shutting down and accepts no new requests")
        model = self.repository.get(name, version)
        prepare_inputs(model, request)
        outputs = await model.runner.infer(request)
        if request.outputs:
            outputs = {n: outputs[n] for n in request.outputs}
        return InferResponse(name, model.version, outputs, request.id)

    # -- statistics -------------------------------------------------------------------------

    def statistics(self, name: str = "", version: str = "") -> dict[str, Any]:
        if name:
            self.repository.get(name, version)  # 404/503 for unknown or unavailable models
            record = self.repository.models[name]
            versions = [record.versions[version]] if version else list(record.versions.values())
        else:
            versions = [
                v
                for r in self.repository.models.values()
                if r.state == READY
                for v in r.versions.values()
            ]
        return {"model_stats": [_version_stats(v) for v in versions]}

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

    async def load_model(self, name: str, api_key: str | None) -> None:
        self.authorize_control(api_key)
        record = await self.repository.load(name)
        if record.state != READY:
            raise InvalidArgumentError(f"failed to load '{name}': {record.reason}")

    async def unload_model(self, name: str, api_key: str | None) -> None:
        self.authorize_control(api_key)
        await self.repository.unload(name)


def _version_stats(version: ModelVersion) -> dict[str, Any]:
    data = version.stats.as_dict()
    data["memory_usage"] = version.memory_usage()  # Triton's field: device memory per instance
    return data


def prepare_inputs(model: ModelVersion, request: InferRequest) -> None:
    """Check a request against the model's config and reshape inputs for the backend.

    Raises ``InvalidArgumentError`` naming the model, the input and the expected and received
    values."""
    inputs = request.inputs
    specs = model.inputs
    for name in inputs:
        if name not in specs:
            raise InvalidArgumentError(
                f"model '{model.name}': unexpected input '{name}'; the model's inputs are "
                f"{', '.join(specs)}"
            )
    max_batch = model.config.max_batch_size
    batch = -1
    for spec in specs.values():
        array = inputs.get(spec.name)
        if array is None:
            if spec.optional:
                continue
            raise InvalidArgumentError(
                f"model '{model.name}': input '{spec.name}' is missing; expected inputs "
                f"{', '.join(s.name for s in specs.values() if not s.optional)}"
            )
        datatype = v2_datatype(array.dtype)
        if datatype != spec.datatype:
            raise InvalidArgumentError(
                f"model '{model.name}' input '{spec.name}' datatype: expected {spec.datatype}; "
                f"received {datatype}"
            )
        shape = array.shape
        if max_batch > 0:
            if len(shape) != len(spec.dims) + 1 or not _fits(shape[1:], spec.dims):
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}' shape: expected "
                    f"{[-1, *spec.dims]}; received {list(shape)}"
                )
            rows = shape[0]
            if rows < 1 or rows > max_batch:
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}': batch size {rows} is outside "
                    f"1..{max_batch} (max_batch_size)"
                )
            if batch not in (-1, rows):
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}': batch size {rows} differs from "
                    f"the other inputs' batch size {batch}"
                )
            batch = rows
        elif not _fits(shape, spec.dims):
            raise InvalidArgumentError(
                f"model '{model.name}' input '{spec.name}' shape: expected {list(spec.dims)}; "
                f"received {list(shape)}"
            )
        if spec.reshape is not None:
            inputs[spec.name] = _reshape(array, spec, max_batch > 0)
    for name in request.outputs:
        if name not in model.outputs:
            raise InvalidArgumentError(
                f"model '{model.name}': unknown output '{name}' requested; the model's outputs "
                f"are {', '.join(model.outputs)}"
            )


def _fits(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    if shape == dims:
        return True
    if len(shape) != len(dims):
        return False
    return all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def _reshape(array: np.ndarray, spec: TensorSpec, batched: bool) -> np.ndarray:
    assert spec.reshape is not None
    target = (array.shape[0], *spec.reshape) if batched else spec.reshape
    return array.reshape(target)
