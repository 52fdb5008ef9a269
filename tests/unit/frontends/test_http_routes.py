"""The V2 HTTP frontend's routing and error mapping in process: ``HttpFrontend.handle`` on a
data plane over models in a dict and a fake runner (no socket, no server process)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest

from accelserve.errors import (
    AccelServeError,
    ConfigError,
    DeviceError,
    InvalidArgumentError,
    ModelExecutionError,
    ModelInputError,
    ModelNotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QueueFullError,
    QueueTimeoutError,
    ServerFaultError,
    UnauthenticatedError,
    UnavailableError,
)
from accelserve.frontends.http import HttpFrontend
from accelserve.frontends.http_server import Headers, Request
from tests.unit.fake_models import (
    API_KEY,
    FakeRegistry,
    runner_of,
    simple_dataplane,
    simple_version,
)

ROW = [1, 2, 3, 4]


def call(
    method: str,
    path: str,
    body: Any = b"",
    headers: Headers | None = None,
    *,
    model_control: bool = False,
    frontend: HttpFrontend | None = None,
) -> tuple[int, dict[bytes, bytes], bytes]:
    if frontend is None:
        frontend = HttpFrontend(simple_dataplane(model_control=model_control))
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = Request(method, path, b"", headers or [], data)
    status, response_headers, payload = asyncio.run(frontend.handle(request))
    return status, dict(response_headers), payload


def call_json(method: str, path: str, body: Any = b"", **kwargs: Any) -> tuple[int, Any]:
    status, headers, payload = call(method, path, body, **kwargs)
    assert headers[b"content-type"] == b"application/json"
    return status, json.loads(payload)


def infer_body(**extra: Any) -> dict[str, Any]:
    tensors = [
        {"name": name, "datatype": "INT32", "shape": [1, 4], "data": ROW}
        for name in ("INPUT0", "INPUT1")
    ]
    return {"inputs": tensors, **extra}


# ---------------------------------------------------------------------------------- routes


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2", 200),
        ("GET", "/v2/health/live", 200),
        ("GET", "/v2/health/ready", 200),
        ("GET", "/v2/models/stats", 200),
        ("POST", "/v2/repository/index", 200),
        ("GET", "/v2/models/simple", 200),
        ("GET", "/v2/models/simple/versions/1", 200),
        ("GET", "/v2/models/simple/ready", 200),
        ("GET", "/v2/models/simple/versions/2/ready", 200),
        ("GET", "/v2/models/simple/config", 200),
        ("GET", "/v2/models/simple/stats", 200),
        ("GET", "/v2/models/simple/versions/1/stats", 200),
        ("GET", "/v2/models/broken/ready", 400),  # known, not ready
        ("GET", "/v2/models/simple/versions/9/ready", 400),
        ("GET", "/v2/models/nope/ready", 404),
        ("GET", "/v2/models/nope", 404),
        ("GET", "/v2/models/simple/versions/9", 404),
        ("GET", "/v2/models/broken", 503),
        ("GET", "/v2/models/broken/config", 503),
        ("GET", "/v2/models/simple/bogus", 404),
        ("GET", "/v2/models/simple/ready/extra", 404),
        ("GET", "/v2/nothing", 404),
        ("GET", "/elsewhere", 404),
        ("POST", "/v2", 405),
        ("POST", "/v2/health/live", 405),
        ("HEAD", "/v2/health/ready", 405),
        ("GET", "/v2/repository/index", 405),
        ("DELETE", "/v2/models/simple", 405),
        ("GET", "/v2/models/simple/infer", 405),
        ("POST", "/v2/models/simple/config", 405),
        ("GET", "/v2/repository/models/simple/load", 405),
        ("POST", "/v2/repository/models/simple/reload", 404),
    ],
)
def test_route_status(method: str, path: str, status: int) -> None:
    code, body = call_json(method, path)
    assert code == status, body
    if status == 400 and path.endswith("/ready"):
        assert body == {"ready": False}
    elif status >= 400:
        assert isinstance(body["error"], str) and body["error"]


def test_method_not_allowed_names_the_route_and_method() -> None:
    _, body = call_json("POST", "/v2/models/simple/versions/1/stats")
    assert body == {
        "error": "method POST is not allowed on /v2/models/simple/versions/1/stats; expected GET"
    }


def test_health_when_not_started_or_stopping() -> None:
    dataplane = simple_dataplane()
    frontend = HttpFrontend(dataplane)
    dataplane.stopping = True
    assert call("GET", "/v2/health/ready", frontend=frontend)[0] == 503
    assert call("GET", "/v2/health/live", frontend=frontend)[0] == 200
    code, body = call_json("POST", "/v2/models/simple/infer", infer_body(), frontend=frontend)
    assert code == 503 and "shutting down" in body["error"]


# ---------------------------------------------------------------------------------- shapes


def test_server_and_model_metadata_shapes() -> None:
    _, server = call_json("GET", "/v2")
    assert server["name"] == "accelserve" and "binary_tensor_data" in server["extensions"]
    _, model = call_json("GET", "/v2/models/simple")
    assert model["versions"] == ["1", "2"] and model["platform"] == "onnxruntime_onnx"
    assert model["inputs"][0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 4]}
    assert [o["name"] for o in model["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert call_json("GET", "/v2/models/simple/ready")[1] == {"ready": True}


def test_config_shape() -> None:
    _, config = call_json("GET", "/v2/models/simple/versions/1/config")
    assert config["name"] == "simple" and config["max_batch_size"] == 8
    assert config["input"][0]["data_type"] == "TYPE_INT32" and config["instances"] == []


def test_stats_shape() -> None:
    _, stats = call_json("GET", "/v2/models/simple/versions/2/stats")
    (entry,) = stats["model_stats"]
    assert (entry["name"], entry["version"]) == ("simple", "2")
    assert set(entry["inference_stats"]) >= {"success", "fail", "queue", "compute_infer"}
    assert entry["batch_stats"] == [] and entry["memory_usage"] == []
    _, every = call_json("GET", "/v2/models/stats")
    assert [s["version"] for s in every["model_stats"]] == ["1", "2"]


def test_repository_index_shape_and_ready_filter() -> None:
    _, rows = call_json("POST", "/v2/repository/index")
    assert rows[0] == {"name": "broken", "version": "", "state": "UNAVAILABLE"}
    assert {"name": "simple", "version": "1", "state": "READY"} in rows
    _, ready = call_json("POST", "/v2/repository/index", {"ready": True})
    assert {r["name"] for r in ready} == {"simple"}
    code, body = call_json("POST", "/v2/repository/index", [1])
    assert code == 400 and "JSON object" in body["error"]
    code, body = call_json("POST", "/v2/repository/index", b"{not json")
    assert code == 400


# ---------------------------------------------------------------------------------- infer


def test_infer_json() -> None:
    dataplane = simple_dataplane()
    frontend = HttpFrontend(dataplane)
    body = infer_body(id="req-7", parameters={"priority": 1, "timeout": 5000})
    code, response = call_json("POST", "/v2/models/simple/infer", body, frontend=frontend)
    assert code == 200, response
    assert (response["model_name"], response["model_version"]) == ("simple", "2")
    assert response["id"] == "req-7"
    outputs = {o["name"]: o for o in response["outputs"]}
    assert outputs["OUTPUT0"] == {
        "name": "OUTPUT0",
        "datatype": "INT32",
        "shape": [1, 4],
        "data": [2, 4, 6, 8],
    }
    assert outputs["OUTPUT1"]["data"] == [0, 0, 0, 0]
    (seen,) = runner_of(dataplane).requests
    assert (seen.priority, seen.timeout_us, seen.id) == (1, 5000, "req-7")
    # one version, one output
    body = infer_body(outputs=[{"name": "OUTPUT1"}])
    code, response = call_json("POST", "/v2/models/simple/versions/1/infer", body)
    assert response["model_version"] == "1"
    assert [o["name"] for o in response["outputs"]] == ["OUTPUT1"]


def test_infer_binary_request_and_response() -> None:
    raw = np.array([ROW], dtype=np.int32).tobytes()
    header = {
        "inputs": [
            {
                "name": name,
                "datatype": "INT32",
                "shape": [1, 4],
                "parameters": {"binary_data_size": len(raw)},
            }
            for name in ("INPUT0", "INPUT1")
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode()
    headers = [(b"inference-header-content-length", str(len(head)).encode())]
    code, response_headers, payload = call(
        "POST", "/v2/models/simple/infer", head + raw + raw, headers
    )
    assert code == 200, payload
    assert response_headers[b"content-type"] == b"application/octet-stream"
    json_length = int(response_headers[b"inference-header-content-length"])
    meta = json.loads(payload[:json_length])
    (output,) = meta["outputs"]
    assert output["parameters"] == {"binary_data_size": 16}
    assert np.frombuffer(payload[json_length:], np.int32).tolist() == [2, 4, 6, 8]


@pytest.mark.parametrize(
    ("body", "headers", "needle"),
    [
        (infer_body(inputs=[]), [], "INPUT0"),
        (b"{broken", [], ""),
        (infer_body(parameters={"priority": -1}), [], "priority"),
        (infer_body(parameters={"timeout": True}), [], "timeout"),
        (infer_body(), [(b"inference-header-content-length", b"x1")], "non-negative integer"),
        (infer_body(), [(b"inference-header-content-length", b"99999")], ""),
        (infer_body(outputs=[{"name": "OUTPUT9"}]), [], "OUTPUT9"),
    ],
)
def test_bad_infer_requests_are_400(body: Any, headers: Headers, needle: str) -> None:
    code, _, payload = call("POST", "/v2/models/simple/infer", body, headers)
    assert code == 400, payload
    assert needle in json.loads(payload)["error"]


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (InvalidArgumentError("bad"), 400),
        (ConfigError("bad config"), 400),
        (DeviceError("no such device"), 400),
        (UnauthenticatedError("who"), 401),
        (PermissionDeniedError("no"), 403),
        (ModelNotFoundError("gone"), 404),
        (PayloadTooLargeError("too big"), 413),
        (ModelExecutionError("backend failed"), 500),
        (ModelInputError("input 'ids' holds 9"), 400),
        (ServerFaultError("out of memory"), 500),
        (UnavailableError("later"), 503),
        (QueueFullError("queue full"), 503),
        (QueueTimeoutError("waited too long"), 503),
    ],
)
def test_runner_errors_map_to_status(error: AccelServeError, status: int) -> None:
    dataplane = simple_dataplane()
    runner_of(dataplane).error = error
    code, headers, payload = call(
        "POST", "/v2/models/simple/infer", infer_body(), frontend=HttpFrontend(dataplane)
    )
    assert (code, json.loads(payload)) == (status, {"error": error.message})
    assert headers[b"content-type"] == b"application/json"
    # A 503 (overload, not ready) tells the client when to come back; no other status does.
    assert headers.get(b"retry-after") == (b"1" if status == 503 else None)


def test_unexpected_errors_are_500_without_details() -> None:
    dataplane = simple_dataplane()
    runner_of(dataplane).error = RuntimeError("secret internal path /opt/x")
    code, body = call_json(
        "POST", "/v2/models/simple/infer", infer_body(), frontend=HttpFrontend(dataplane)
    )
    assert (code, body) == (500, {"error": "internal server error"})


# ---------------------------------------------------------------------------- model control


def bearer(key: str) -> Headers:
    return [(b"authorization", f"Bearer {key}".encode())]


def test_model_control_statuses() -> None:
    load = "/v2/repository/models/simple/load"
    assert call("POST", load, headers=bearer(API_KEY))[0] == 403  # control is off
    dataplane = simple_dataplane(model_control=True)
    frontend = HttpFrontend(dataplane)
    assert call("POST", load, frontend=frontend)[0] == 401
    assert call("POST", load, headers=bearer("wrong"), frontend=frontend)[0] == 401
    basic = [(b"authorization", f"Basic {API_KEY}".encode())]
    assert call("POST", load, headers=basic, frontend=frontend)[0] == 401
    code, body = call_json("POST", load, headers=bearer(API_KEY), frontend=frontend)
    assert code == 400 and "failed to load 'simple'" in body["error"]  # not loadable
    registry = dataplane.repository
    assert isinstance(registry, FakeRegistry)
    registry.loadable["simple"] = [simple_version("3")]
    assert call("POST", load, headers=bearer(API_KEY), frontend=frontend)[0] == 200
    assert call_json("GET", "/v2/models/simple", frontend=frontend)[1]["versions"] == ["3"]
    unload = "/v2/repository/models/broken/unload"
    assert call("POST", unload, headers=bearer(API_KEY), frontend=frontend) == (
        200,
        {b"content-type": b"application/json"},
        b"{}",
    )
    code, _ = call_json(
        "POST", "/v2/repository/models/nope/unload", headers=bearer(API_KEY), frontend=frontend
    )
    assert code == 404


# ---------------------------------------------------------------------------- extra handler


def test_extra_handler_gets_the_routes_v2_does_not_claim() -> None:
    seen: list[tuple[str, str]] = []

    async def extra(method: str, path: str, headers: Headers, body: bytes) -> Any:
        seen.append((method, path))
        return (200, [], b"mine") if path == "/v1/embeddings" else None

    frontend = HttpFrontend(simple_dataplane(), extra=extra)
    assert call("POST", "/v1/embeddings", frontend=frontend)[2] == b"mine"
    assert call("GET", "/other", frontend=frontend)[0] == 404
    assert call("GET", "/v2/nothing", frontend=frontend)[0] == 404  # v2 never reaches it
    assert seen == [("POST", "/v1/embeddings"), ("GET", "/other")]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v2", b"GET"),
        ("DELETE", "/v2/models/simple", b"GET"),
        ("GET", "/v2/models/simple/infer", b"POST"),
        ("GET", "/v2/repository/index", b"POST"),
        ("PUT", "/openapi.json", b"GET"),
    ],
)
def test_method_not_allowed_says_which_methods_are(method: str, path: str, allowed: bytes) -> None:
    # RFC 9110 (15.5.6): a 405 lists the target's methods in Allow.
    status, headers, _ = call(method, path)
    assert status == 405
    assert headers[b"allow"] == allowed


def test_openapi_document_is_served() -> None:
    status, document = call_json("GET", "/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.1")
    assert "/v2/models/{model_name}/infer" in document["paths"]
    assert "/v1/embeddings" in document["paths"]


@pytest.mark.parametrize("ready", ["yes", 1, None, [], {}])
def test_repository_index_ready_must_be_a_boolean(ready: object) -> None:
    status, body = call_json("POST", "/v2/repository/index", {"ready": ready})
    assert status == 400
    assert "'ready': expected true or false" in body["error"]


def test_repository_index_ready_filters() -> None:
    status, rows = call_json("POST", "/v2/repository/index", {"ready": True})
    assert status == 200 and rows and all(r["state"] == "READY" for r in rows)
