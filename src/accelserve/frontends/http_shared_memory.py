"""Triton's shared-memory extension over HTTP: the region routes.

    GET  /v2/systemsharedmemory[/region/{name}]/status
    POST /v2/systemsharedmemory/region/{name}/register   {"key", "offset", "byte_size"}
    POST /v2/systemsharedmemory[/region/{name}]/unregister

and the same under ``/v2/cudasharedmemory``, whose register body is
``{"raw_handle": {"b64": <base64 CUDA IPC handle>}, "device_id", "byte_size"}`` (a server
without a GPU answers 400 to it, and its status lists no region). The regions themselves are
``shared_memory.SharedMemoryRegistry``, the data plane's.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from accelserve.codecs.v2 import describe
from accelserve.codecs.v2_http_json import decode_json, encode_json
from accelserve.errors import InvalidArgumentError, ModelNotFoundError
from accelserve.frontends.errors import expect_method
from accelserve.shared_memory import SharedMemoryRegistry

JSON = [(b"content-type", b"application/json")]
Response = tuple[int, list[tuple[bytes, bytes]], bytes]
KINDS = ("systemsharedmemory", "cudasharedmemory")


def shared_memory_route(
    registry: SharedMemoryRegistry, method: str, parts: list[str], body: bytes
) -> Response:
    """``parts``: the path's components, starting "v2", one of ``KINDS``."""
    route = "/" + "/".join(parts)
    kind, rest = parts[1], parts[2:]
    name = ""
    if len(rest) == 3 and rest[0] == "region" and rest[1]:
        name, rest = rest[1], rest[2:]
    action = rest[0] if len(rest) == 1 else ""
    if action == "status":
        expect_method(method, "GET", route)
        if kind == "systemsharedmemory":
            return _json(registry.system_status(name))
        return _json(registry.cuda_status(name))
    if action == "register" and name:
        expect_method(method, "POST", route)
        if kind == "cudasharedmemory":
            registry.register_cuda(name, *_cuda_register_body(name, body))
            return _json({})
        key, offset, byte_size = _register_body(name, body)
        registry.register_system(name, key, offset, byte_size)
        return _json({})
    if action == "unregister":
        expect_method(method, "POST", route)
        if kind == "systemsharedmemory":
            registry.unregister_system(name)
        else:
            registry.unregister_cuda(name)
        return _json({})
    raise ModelNotFoundError(f"no route for {method} {route}")


def _register_body(name: str, body: bytes) -> tuple[str, int, int]:
    data = decode_json(body) if body.strip() else None
    if type(data) is not dict:
        raise InvalidArgumentError(
            f"register shared memory region '{name}': expected a JSON object with 'key', "
            f"'offset' and 'byte_size'; received {describe(data)}"
        )
    key = data.get("key")
    if type(key) is not str or not key:
        raise InvalidArgumentError(
            f"register shared memory region '{name}' 'key': expected the shared-memory "
            f"object's name (a non-empty string); received {describe(key)}"
        )
    values: list[int] = []
    for field, default in (("offset", 0), ("byte_size", None)):
        value: Any = data.get(field, default)
        if type(value) is not int or value < 0:
            received = "nothing" if value is None else describe(value)
            raise InvalidArgumentError(
                f"register shared memory region '{name}' '{field}': expected a non-negative "
                f"integer; received {received}"
            )
        values.append(value)
    return key, values[0], values[1]


def _cuda_register_body(name: str, body: bytes) -> tuple[bytes, int, int]:
    data = decode_json(body) if body.strip() else None
    what = f"register CUDA shared memory region '{name}'"
    if type(data) is not dict:
        raise InvalidArgumentError(
            f"{what}: expected a JSON object with 'raw_handle', 'device_id' and 'byte_size'; "
            f"received {describe(data)}"
        )
    handle = data.get("raw_handle")
    encoded = handle.get("b64") if type(handle) is dict else None
    raw: bytes | None = None
    if type(encoded) is str:
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None:
        received = "nothing" if handle is None else describe(handle)
        raise InvalidArgumentError(
            f"{what} 'raw_handle': expected {{\"b64\": <the base64 of a CUDA IPC memory "
            f"handle>}}; received {received}"
        )
    values: list[int] = []
    for field in ("device_id", "byte_size"):
        value: Any = data.get(field)
        if type(value) is not int or value < 0:
            received = "nothing" if value is None else describe(value)
            raise InvalidArgumentError(
                f"{what} '{field}': expected a non-negative integer; received {received}"
            )
        values.append(value)
    return raw, values[0], values[1]


def _json(data: Any) -> Response:
    return 200, JSON, encode_json(data)
