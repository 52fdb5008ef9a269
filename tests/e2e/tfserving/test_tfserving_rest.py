"""TF Serving's REST API through the real server with raw httpx requests: predict in the row and
columnar formats (equal to the KServe V2 answer for the same input), base64 BYTES, metadata,
status and versions, and every bad request answered in TF Serving's ``{"error": ...}`` shape."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.model_builders import mlp_reference

X0 = list(range(16))
X1 = [3] * 16


def _post(server: ServerProcess, path: str, body: Any) -> httpx.Response:
    return httpx.post(f"{server.base}{path}", json=body)


def _v2(server: ServerProcess, model: str, inputs: dict[str, np.ndarray]) -> dict[str, list]:
    body = {
        "inputs": [
            {
                "name": n,
                "datatype": "INT32" if a.dtype == np.int32 else "FP32",
                "shape": list(a.shape),
                "data": a.ravel().tolist(),
            }
            for n, a in inputs.items()
        ]
    }
    response = _post(server, f"/v2/models/{model}/infer", body)
    assert response.status_code == 200, response.text
    return {
        o["name"]: np.reshape(o["data"], o["shape"]).tolist() for o in response.json()["outputs"]
    }


def _error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"], body["error"]
    return str(body["error"])


def test_row_and_columnar_predict_equal_v2(tfs_server: ServerProcess) -> None:
    rows = [{"INPUT0": X0, "INPUT1": X1}, {"INPUT0": X1, "INPUT1": X0}]
    want = _v2(
        tfs_server,
        "simple",
        {"INPUT0": np.array([X0, X1], np.int32), "INPUT1": np.array([X1, X0], np.int32)},
    )
    row = _post(tfs_server, "/v1/models/simple:predict", {"instances": rows})
    assert row.status_code == 200, row.text
    predictions = row.json()["predictions"]
    assert [p["OUTPUT0"] for p in predictions] == want["OUTPUT0"]
    assert [p["OUTPUT1"] for p in predictions] == want["OUTPUT1"]
    columnar = _post(
        tfs_server,
        "/v1/models/simple/versions/1:predict",
        {"signature_name": "serving_default", "inputs": {"INPUT0": [X0, X1], "INPUT1": [X1, X0]}},
    )
    assert columnar.status_code == 200, columnar.text
    assert columnar.json() == {"outputs": want}


def test_single_input_model_takes_bare_values(tfs_server: ServerProcess) -> None:
    x = np.array([[1, 2, 3, 4], [0.5, 0, -1, 2]], np.float32)
    want = _v2(tfs_server, "onnx_mlp", {"x": x})["y"]
    row = _post(tfs_server, "/v1/models/onnx_mlp:predict", {"instances": x.tolist()})
    columnar = _post(tfs_server, "/v1/models/onnx_mlp:predict", {"inputs": x.tolist()})
    assert row.json() == {"predictions": want}
    assert columnar.json() == {"outputs": want}
    np.testing.assert_allclose(want, mlp_reference(x), rtol=1e-5, atol=1e-5)
    keyed = _post(
        tfs_server, "/v1/models/onnx_mlp:predict", {"instances": [{"x": r} for r in x.tolist()]}
    )
    assert keyed.json() == {"predictions": want}


def test_non_finite_values_in_and_out(tfs_server: ServerProcess) -> None:
    body = b'{"instances": [[1, 2, NaN, Infinity]]}'
    response = httpx.post(f"{tfs_server.base}/v1/models/onnx_mlp:predict", content=body)
    assert response.status_code == 200, response.text
    assert b"NaN" in response.content  # TF Serving's tokens, not null
    assert all(math.isnan(v) for v in json.loads(response.content)["predictions"][0])


def test_bytes_as_text_and_base64(tfs_server: ServerProcess) -> None:
    blob = bytes([0, 255, 10, 66])
    instances = [["héllo"], [{"b64": base64.b64encode(blob).decode()}]]
    response = _post(tfs_server, "/v1/models/text:predict", {"instances": instances})
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert first["upper"] == ["HéLLO"] and first["length"] == [len("héllo".encode())]
    # A name ending in _bytes is binary: always base64, as TF Serving writes it.
    assert base64.b64decode(first["raw_bytes"][0]["b64"]) == "héllo".encode() + b"\xff"
    assert base64.b64decode(second["raw_bytes"][0]["b64"]) == blob + b"\xff"
    # A non-UTF-8 value in a text output comes back as base64 rather than as broken text.
    assert base64.b64decode(second["upper"][0]["b64"]) == blob.upper()
    columnar = _post(tfs_server, "/v1/models/text:predict", {"inputs": {"text": [["a"], ["bc"]]}})
    assert columnar.json()["outputs"]["length"] == [[1], [2]]


def test_status_of_every_version(tfs_server: ServerProcess) -> None:
    ok = {"error_code": "OK", "error_message": ""}
    response = httpx.get(f"{tfs_server.base}/v1/models/versioned")
    assert response.json() == {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": ok},
            {"version": "2", "state": "AVAILABLE", "status": ok},
        ]
    }
    one = httpx.get(f"{tfs_server.base}/v1/models/versioned/versions/2").json()
    assert one == {"model_version_status": [{"version": "2", "state": "AVAILABLE", "status": ok}]}
    (broken,) = httpx.get(f"{tfs_server.base}/v1/models/broken").json()["model_version_status"]
    assert broken["state"] == "END" and broken["status"]["error_code"] == "UNKNOWN"
    assert "model.onnx" in broken["status"]["error_message"]


def test_versions_are_served(tfs_server: ServerProcess) -> None:
    for version in ("1", "2"):
        response = _post(
            tfs_server,
            f"/v1/models/versioned/versions/{version}:predict",
            {"instances": [{"INPUT0": X0, "INPUT1": X1}]},
        )
        assert response.json()["predictions"][0]["OUTPUT1"] == [x - 3 for x in X0]
    meta = httpx.get(f"{tfs_server.base}/v1/models/versioned/versions/1/metadata").json()
    assert meta["model_spec"] == {"name": "versioned", "version": "1", "signature_name": ""}
    latest = httpx.get(f"{tfs_server.base}/v1/models/versioned/metadata").json()
    assert latest["model_spec"]["version"] == "2"


def test_metadata_is_a_serving_default_signature(tfs_server: ServerProcess) -> None:
    data = httpx.get(f"{tfs_server.base}/v1/models/text/metadata").json()
    signature = data["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    assert signature["inputs"] == {
        "text": {
            "name": "text",
            "dtype": "DT_STRING",
            "tensor_shape": {
                "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
                "unknown_rank": False,
            },
        }
    }
    assert {k: v["dtype"] for k, v in signature["outputs"].items()} == {
        "upper": "DT_STRING",
        "raw_bytes": "DT_STRING",
        "length": "DT_INT32",
    }


GOOD = {"instances": [{"INPUT0": X0, "INPUT1": X1}]}


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/models/nope:predict", GOOD, 404, ("nope",)),
        ("/v1/models/simple/versions/9:predict", GOOD, 404, ("version 9",)),
        ("/v1/models/simple/labels/stable:predict", GOOD, 404, ("label 'stable'",)),
        (
            "/v1/models/simple:predict",
            {**GOOD, "signature_name": "other"},
            400,
            ('"other" not found in signature def',),
        ),
        (
            "/v1/models/simple:predict",
            {"instances": [{"INPUT0": X0, "INPUT1": X1[:3]}]},
            400,
            ("shape", "INPUT1"),
        ),
        (
            "/v1/models/simple:predict",
            {"instances": [{"INPUT0": X0, "INPUT1": X1}, {"INPUT0": X0[:4], "INPUT1": X1}]},
            400,
            ("ragged", "INPUT0"),
        ),
        (
            "/v1/models/simple:predict",
            {"instances": [{"INPUT0": X0, "INPUT1": X1}, {"INPUT0": X0}]},
            400,
            ("instances[1]", "same inputs"),
        ),
        (
            "/v1/models/simple:predict",
            {"instances": [{"INPUT0": X0, "INPUTX": X1}]},
            400,
            ("unknown input 'INPUTX'", "INPUT0, INPUT1"),
        ),
        (
            "/v1/models/simple:predict",
            {"instances": [{"INPUT0": X0, "INPUT1": [1.5] * 16}]},
            400,
            ("INT32", "1.5"),
        ),
        (
            "/v1/models/simple:predict",
            {"instances": [{"INPUT0": X0, "INPUT1": ["a"] * 16}]},
            400,
            ("INT32", "string"),
        ),
        ("/v1/models/simple:predict", {"instances": [X0]}, 400, ("object keyed by input name",)),
        ("/v1/models/simple:predict", {"instances": []}, 400, ("non-empty list",)),
        ("/v1/models/simple:predict", {"inputs": {"INPUT0": [X0]}}, 400, ("INPUT1", "missing")),
        ("/v1/models/simple:predict", {**GOOD, "inputs": {}}, 400, ("both",)),
        ("/v1/models/simple:predict", {"signature_name": "serving_default"}, 400, ("neither",)),
        (
            "/v1/models/text:predict",
            {"instances": [[{"b64": "not base64!"}]]},
            400,
            ("not valid base64",),
        ),
        ("/v1/models/text:predict", {"instances": [[7]]}, 400, ("DT_STRING", "integer 7")),
        (
            "/v1/models/onnx_mlp:predict",
            {"instances": [[{"b64": "AAAA"}] * 4]},
            400,
            ("FP32", "b64"),
        ),
        (
            "/v1/models/simple:classify",
            {"examples": [{"x": 1}]},
            400,
            ("no classify signature", ":predict"),
        ),
        ("/v1/models/simple:regress", {"examples": [{"x": 1}]}, 400, ("no regress signature",)),
        ("/v1/models/nope:regress", {"examples": []}, 404, ("nope",)),
        ("/v1/models/simple:explain", GOOD, 404, (":predict",)),
    ],
)
def test_bad_requests(
    tfs_server: ServerProcess, path: str, body: Any, status: int, words: tuple[str, ...]
) -> None:
    _error(_post(tfs_server, path, body), status, *words)


@pytest.mark.parametrize(
    ("body", "words"),
    [(b"{nope", ("malformed JSON",)), (b"[1, 2]", ("JSON object",)), (b"", ("malformed JSON",))],
)
def test_malformed_json(tfs_server: ServerProcess, body: bytes, words: tuple[str, ...]) -> None:
    response = httpx.post(f"{tfs_server.base}/v1/models/simple:predict", content=body)
    _error(response, 400, *words)


@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/v1/models/nope", 404, ("Could not find any versions of model nope",)),
        ("/v1/models/simple/versions/3", 404, ("Could not find version 3 of model simple",)),
        ("/v1/models/simple/versions/x", 400, ("Failed to convert version: x",)),
        ("/v1/models/nope/metadata", 404, ("nope",)),
        ("/v1/models/simple/versions/5/metadata", 404, ("version 5",)),
        ("/v1/models/simple/labels/canary", 404, ("label 'canary'",)),
    ],
)
def test_bad_gets(
    tfs_server: ServerProcess, path: str, status: int, words: tuple[str, ...]
) -> None:
    _error(httpx.get(f"{tfs_server.base}{path}"), status, *words)


def test_wrong_methods(tfs_server: ServerProcess) -> None:
    _error(httpx.get(f"{tfs_server.base}/v1/models/simple:predict"), 405, "expected POST")
    _error(httpx.post(f"{tfs_server.base}/v1/models/simple/metadata", json={}), 405, "expected GET")
