"""KServe V2 JSON pieces for `simple`, shared by the Python peers (Ray Serve, LitServe, Starlette).

These peers do not implement Triton's binary tensor extension, so the load generator drives them
with V2 JSON (`--http-format json`). Runs in the peers' venv (benchmarks/.peers/py), not in
accelserve's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

MAX_BATCH = 8
DIMS = 16

METADATA = {
    "name": "simple",
    "versions": ["1"],
    "platform": "python",
    "inputs": [{"name": n, "datatype": "INT32", "shape": [-1, DIMS]} for n in ("INPUT0", "INPUT1")],
    "outputs": [
        {"name": n, "datatype": "INT32", "shape": [-1, DIMS]} for n in ("OUTPUT0", "OUTPUT1")
    ],
}
CONFIG = {
    "name": "simple",
    "backend": "python",
    "max_batch_size": MAX_BATCH,
    "input": [{"name": n, "data_type": "TYPE_INT32", "dims": [DIMS]} for n in ("INPUT0", "INPUT1")],
    "output": [
        {"name": n, "data_type": "TYPE_INT32", "dims": [DIMS]} for n in ("OUTPUT0", "OUTPUT1")
    ],
}
METADATA_JSON = orjson.dumps(METADATA)
CONFIG_JSON = orjson.dumps(CONFIG)


class BadRequest(ValueError):
    pass


def decode(payload: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The two INT32 [n, 16] inputs of a V2 JSON request (flat or nested data)."""
    tensors: dict[str, np.ndarray] = {}
    for item in payload.get("inputs", ()):
        name = item.get("name")
        if name not in ("INPUT0", "INPUT1") or item.get("datatype") != "INT32":
            raise BadRequest(f"unexpected input {name!r} with datatype {item.get('datatype')!r}")
        shape = tuple(item.get("shape", ()))
        if len(shape) != 2 or shape[1] != DIMS or not 1 <= shape[0] <= MAX_BATCH:
            raise BadRequest(f"input {name} shape {list(shape)}, expected [1..{MAX_BATCH}, {DIMS}]")
        tensors[name] = np.asarray(item.get("data"), dtype=np.int32).reshape(shape)
    if len(tensors) != 2 or tensors["INPUT0"].shape != tensors["INPUT1"].shape:
        raise BadRequest("expected INPUT0 and INPUT1 of the same shape")
    return tensors["INPUT0"], tensors["INPUT1"]


def decode_bytes(body: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    return decode(payload)


def compute(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a + b, a - b


def response(out0: np.ndarray, out1: np.ndarray) -> dict[str, Any]:
    shape = list(out0.shape)
    return {
        "model_name": "simple",
        "model_version": "1",
        "outputs": [
            {"name": "OUTPUT0", "datatype": "INT32", "shape": shape, "data": out0.ravel().tolist()},
            {"name": "OUTPUT1", "datatype": "INT32", "shape": shape, "data": out1.ravel().tolist()},
        ],
    }


def response_bytes(out0: np.ndarray, out1: np.ndarray) -> bytes:
    return orjson.dumps(response(out0, out1))


def run_batch(items: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One vectorized step over a batch of requests, split back per request."""
    a = np.concatenate([x for x, _ in items])
    b = np.concatenate([y for _, y in items])
    s, d = compute(a, b)
    out, start = [], 0
    for x, _ in items:
        stop = start + x.shape[0]
        out.append((s[start:stop], d[start:stop]))
        start = stop
    return out
