"""Triton's generate extension (``protocol/extension_generate.md``): a JSON object in, JSON out.

``POST /v2/models/{m}[/versions/{v}]/generate`` answers one JSON object; ``.../generate_stream``
answers server-sent events, ``data: {json}`` per response of the model (a decoupled model's
many), and ``data: {"error": ...}`` for a response that failed.

Request: every key but ``id`` and ``parameters`` names an input of the model and holds its
value (a scalar or a nested list); a key of ``parameters`` that names an input is that input,
the others are request parameters. A value is shaped to the input's declared shape (variable
dims take what is left; the batch dim, if any, is 1). Response: ``model_name``,
``model_version``, ``id`` when given, and each output as a scalar (one element) or a flat list.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from accelserve.codecs.v2_http_json import decode_json
from accelserve.dataplane import DataPlane
from accelserve.errors import AccelServeError, InvalidArgumentError
from accelserve.types import V2_TO_NUMPY, InferRequest, StreamResponse

_RESERVED = ("id", "parameters")


def decode_generate(dataplane: DataPlane, name: str, version: str, body: bytes) -> InferRequest:
    try:  # the infer route's parser: its errors, and its nesting limit
        data = decode_json(body or b"{}")
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(
            f"generate request body: expected a JSON object; {exc.message}"
        ) from None
    if not isinstance(data, dict):
        raise InvalidArgumentError(
            f"generate request body: expected a JSON object; received {type(data).__name__}"
        )
    metadata = dataplane.model_metadata(name, version)
    specs = {spec["name"]: spec for spec in metadata["inputs"]}
    parameters = data.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidArgumentError(
            f"generate request 'parameters': expected a JSON object; received {parameters!r:.80}"
        )
    request_id = data.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgumentError(
            f"generate request 'id': expected a string; received {request_id!r:.80}"
        )
    values = {k: v for k, v in data.items() if k not in _RESERVED}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise InvalidArgumentError(
            f"generate request for model '{name}': {unknown} name no input; expected the "
            f"inputs {sorted(specs)} (or 'id', 'parameters')"
        )
    values.update({k: v for k, v in parameters.items() if k in specs})
    rest = {k: v for k, v in parameters.items() if k not in specs}
    inputs = {key: _tensor(name, specs[key], value) for key, value in values.items()}
    return InferRequest(inputs=inputs, id=request_id, parameters=rest)


def _tensor(model: str, spec: dict[str, Any], value: Any) -> np.ndarray:
    key, datatype = spec["name"], spec["datatype"]
    flat = np.asarray(value, dtype=object).reshape(-1)
    try:
        if datatype == "BYTES":
            array = np.array(
                [v.encode() if isinstance(v, str) else bytes(v) for v in flat], dtype=object
            )
        else:
            array = np.array(flat.tolist(), dtype=V2_TO_NUMPY[datatype])
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgumentError(
            f"generate request for model '{model}' input '{key}': expected {datatype} values; "
            f"received {value!r:.80}"
        ) from None
    dims = list(spec["shape"])
    variable = [i for i, d in enumerate(dims) if d < 0]
    for i in variable[:-1]:
        dims[i] = 1
    if variable:
        known = math.prod(d for i, d in enumerate(dims) if i != variable[-1])
        dims[variable[-1]] = array.size // known if known else 0
    if math.prod(dims) != array.size:
        raise InvalidArgumentError(
            f"generate request for model '{model}' input '{key}': expected shape {spec['shape']}; "
            f"received {array.size} values"
        )
    return array.reshape(dims)


def encode_generate(part: StreamResponse) -> bytes:
    if part.error is not None:
        return json.dumps({"error": _message(part.error)}).encode()
    data: dict[str, Any] = {"model_name": part.model_name, "model_version": part.model_version}
    if part.id:
        data["id"] = part.id
    for key, array in (part.outputs or {}).items():
        values = [
            v.decode(errors="replace") if isinstance(v, bytes) else v
            for v in array.reshape(-1).tolist()
        ]
        data[key] = values[0] if len(values) == 1 else values
    return json.dumps(data).encode()


async def generate(dataplane: DataPlane, name: str, version: str, request: InferRequest) -> bytes:
    """One JSON response (a decoupled model must send exactly one: ``DataPlane.infer``)."""
    response = await dataplane.infer(name, version, request)
    return encode_generate(
        StreamResponse(name, response.model_version, response.id, response.outputs, True)
    )


async def generate_stream(
    dataplane: DataPlane, name: str, version: str, request: InferRequest
) -> AsyncIterator[bytes]:
    """Server-sent events. The first response is awaited before this returns, so a request the
    model refuses is an error status, not an event."""
    stream = dataplane.infer_stream(name, version, request)
    first = await anext(stream, None)

    async def events() -> AsyncIterator[bytes]:
        try:
            part = first
            while part is not None:
                if part.outputs is not None or part.error is not None:
                    yield b"data: " + encode_generate(part) + b"\n\n"
                part = await anext(stream, None)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # an async generator

    return events()


def _message(error: Exception) -> str:
    return error.message if isinstance(error, AccelServeError) else str(error)
