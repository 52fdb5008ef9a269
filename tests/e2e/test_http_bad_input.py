"""Every bad input gets a clear 4xx JSON error naming the problem, and the server keeps serving."""

from __future__ import annotations

import json
import struct

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess

ROW = list(range(16))


def _body(*inputs: dict[str, object], **extra: object) -> dict[str, object]:
    return {"inputs": list(inputs), **extra}


def _tensor(
    name: str, shape: list[int], data: object, datatype: str = "INT32"
) -> dict[str, object]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


GOOD0 = _tensor("INPUT0", [1, 16], ROW)
GOOD1 = _tensor("INPUT1", [1, 16], ROW)

CASES = {
    "missing input": (_body(GOOD0), 400, "INPUT1"),
    "extra input": (_body(GOOD0, GOOD1, _tensor("INPUT9", [1, 16], ROW)), 400, "INPUT9"),
    "duplicate input": (_body(GOOD0, GOOD0, GOOD1), 400, "INPUT0"),
    "wrong datatype": (_body(_tensor("INPUT0", [1, 16], ROW, "FP32"), GOOD1), 400, "INT32"),
    "unknown datatype": (_body(_tensor("INPUT0", [1, 16], ROW, "INT33"), GOOD1), 400, "INT33"),
    "data does not fill shape": (_body(_tensor("INPUT0", [1, 16], ROW[:10]), GOOD1), 400, "16"),
    "shape does not fit config": (
        _body(_tensor("INPUT0", [1, 8], ROW[:8]), _tensor("INPUT1", [1, 8], ROW[:8])),
        400,
        "shape",
    ),
    "negative dimension": (_body(_tensor("INPUT0", [-1, 16], ROW), GOOD1), 400, "-1"),
    "element count overflow": (
        _body(_tensor("INPUT0", [2**40, 2**40], ROW), GOOD1),
        400,
        "INPUT0",
    ),
    "batch above max_batch_size": (
        _body(_tensor("INPUT0", [9, 16], ROW * 9), _tensor("INPUT1", [9, 16], ROW * 9)),
        400,
        "max_batch_size",
    ),
    "strings for INT32": (_body(_tensor("INPUT0", [1, 16], ["a"] * 16), GOOD1), 400, "INPUT0"),
    "inputs not a list": ({"inputs": {"INPUT0": 1}}, 400, "inputs"),
    "unknown output requested": (
        _body(GOOD0, GOOD1, outputs=[{"name": "OUTPUT7"}]),
        400,
        "OUTPUT7",
    ),
    "negative priority": (_body(GOOD0, GOOD1, parameters={"priority": -2}), 400, "priority"),
}


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> httpx.Client:
    with httpx.Client(base_url=server.base, timeout=30) as client:
        yield client


def _check_error(response: httpx.Response, status: int, needle: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert needle in error, error
    assert "Traceback" not in error and "/site-packages/" not in error and ".py" not in error
    return error


def _assert_still_serving(http: httpx.Client) -> None:
    response = http.post("/v2/models/simple/infer", json=_body(GOOD0, GOOD1))
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    assert outputs["OUTPUT0"] == [2 * x for x in ROW]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_json_request(http: httpx.Client, case: str) -> None:
    body, status, needle = CASES[case]
    _check_error(http.post("/v2/models/simple/infer", json=body), status, needle)
    _assert_still_serving(http)


def test_unknown_model_and_version(http: httpx.Client) -> None:
    body = _body(GOOD0, GOOD1)
    error = _check_error(http.post("/v2/models/nope/infer", json=body), 404, "nope")
    assert "Request for unknown model" in error
    error = _check_error(http.post("/v2/models/simple/versions/7/infer", json=body), 404, "7")
    assert "Request for unknown model" in error
    _check_error(http.get("/v2/models/nope"), 404, "Request for unknown model")
    _check_error(http.get("/v2/models/nope/ready"), 404, "nope")


def test_unavailable_model_infer(http: httpx.Client) -> None:
    _check_error(http.post("/v2/models/broken/infer", json=_body(GOOD0)), 503, "broken")


def test_malformed_json(http: httpx.Client) -> None:
    response = http.post(
        "/v2/models/simple/infer",
        content=b'{"inputs": [',
        headers={"content-type": "application/json"},
    )
    _check_error(response, 400, "JSON")
    _assert_still_serving(http)


def test_json_nested_too_deep(http: httpx.Client) -> None:
    deep = "[" * 150 + "]" * 150
    body = '{"inputs": [], "parameters": {"x": ' + deep + "}}"
    _check_error(http.post("/v2/models/simple/infer", content=body.encode()), 400, "100")
    _assert_still_serving(http)


def _binary_header(**extra: object) -> bytes:
    """The JSON header of a binary `simple` request: two INT32[1,16] inputs of 64 bytes each."""
    inputs = [
        {"name": n, "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}}
        for n in ("INPUT0", "INPUT1")
    ]
    return json.dumps({"inputs": inputs, **extra}).encode()


def test_binary_header_length_past_body(http: httpx.Client) -> None:
    header = _binary_header()
    body = header + np.zeros(32, np.int32).tobytes()
    response = http.post(
        "/v2/models/simple/infer",
        content=body,
        headers={"Inference-Header-Content-Length": str(len(body) + 100)},
    )
    _check_error(response, 400, str(len(body) + 100))
    # binary sizes that run past the end of the body
    response = http.post(
        "/v2/models/simple/infer",
        content=header + np.zeros(16, np.int32).tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    _check_error(response, 400, "binary")
    _assert_still_serving(http)


def test_binary_body_without_content_type(http: httpx.Client) -> None:
    header = _binary_header(outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": True}}])
    a = np.arange(16, dtype=np.int32)
    response = http.post(
        "/v2/models/simple/infer",
        content=header + a.tobytes() + a.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "content-type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    result = json.loads(response.content[:json_length])
    assert result["outputs"][0]["parameters"]["binary_data_size"] == 64
    np.testing.assert_array_equal(np.frombuffer(response.content[json_length:], np.int32), a * 2)


def test_bytes_length_prefix_past_buffer(http: httpx.Client) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT0",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    payload = struct.pack("<I", 1000) + b"abcd"
    response = http.post(
        "/v2/models/simple/infer",
        content=header + payload,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    _check_error(response, 400, "INPUT0")


def test_body_over_limit_is_413(http: httpx.Client) -> None:
    big = b"x" * (64 * 1024 * 1024 + 1)
    response = http.post("/v2/models/simple/infer", content=big)
    _check_error(response, 413, "limit")
    _assert_still_serving(http)


def test_unknown_route_and_wrong_method(http: httpx.Client) -> None:
    _check_error(http.get("/v3/nothing"), 404, "/v3/nothing")
    response = http.get("/v2/models/simple/infer")
    assert response.status_code == 405
    assert "POST" in response.json()["error"]
