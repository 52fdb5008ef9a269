"""SavedModels through the real server: ``tritonclient`` over HTTP and gRPC, results equal to
TensorFlow's own; a config completed from the signature; a config that disagrees with it, and
a value TensorFlow refuses, answered as the client's fault with a message naming the tensor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ml_dtypes
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess
from tests.tf_builders import SEED_W, place, tf_reference

pytest.importorskip("tensorflow")

SEED_CONFIG = """platform: "tensorflow_savedmodel"
max_batch_size: 128
dynamic_batching { }
input [{ name: "x" data_type: TYPE_FP32 dims: [2] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [2] }]
"""
PARSE_CONFIG = 'parameters { key: "signature_name" value { string_value: "parse" } }\n'
WRONG_DIMS = 'max_batch_size: 8\ninput [{ name: "x" data_type: TYPE_FP32 dims: [3] }]\n'
X = np.random.default_rng(0).standard_normal((100, 2)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tf_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tf_served") / "models"
    place(tf_models, "seed", root, "seed", SEED_CONFIG)
    place(tf_models, "seed", root, "seed_auto")
    place(tf_models, "seed", root, "seed_wrong", WRONG_DIMS)
    place(tf_models, "keras_two", root, "keras_two", "max_batch_size: 16\n")
    place(tf_models, "strings", root, "strings")
    place(tf_models, "strings", root, "parse", PARSE_CONFIG)
    place(tf_models, "half", root, "half")
    process = ServerProcess(root, "--device", "cpu")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


@pytest.fixture(scope="module")
def grpc(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def _inputs(module: object, arrays: dict[str, np.ndarray], datatypes: dict[str, str]) -> list:
    tensors = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), datatypes[name])  # type: ignore[attr-defined]
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


@pytest.mark.parametrize("wire", ["http", "grpc"])
def test_the_seed_model_over_both_wires_equals_tensorflow(
    tf_models: Path,
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    wire: str,
) -> None:
    client, module = (http, httpclient) if wire == "http" else (grpc, grpcclient)
    result = client.infer("seed", _inputs(module, {"x": X}, {"x": "FP32"}))
    y = result.as_numpy("y")
    assert y is not None and y.shape == (100, 2)
    np.testing.assert_allclose(y, tf_reference(tf_models, "seed", {"x": X})["y"], rtol=1e-6)
    np.testing.assert_allclose(y, X @ SEED_W, rtol=1e-5, atol=1e-6)


def test_a_missing_config_is_completed_from_the_signature(
    http: httpclient.InferenceServerClient,
) -> None:
    config = http.get_model_config("seed_auto")
    assert config["platform"] == "tensorflow_savedmodel"
    assert config["max_batch_size"] == 4 and "dynamic_batching" in config
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("x", "TYPE_FP32", [2])
    ]
    metadata = http.get_model_metadata("strings")
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in metadata["outputs"]} == {
        ("upper", "BYTES", (-1,)),
        ("length", "INT32", (-1,)),
    }


def test_keras_two_inputs_over_grpc(
    tf_models: Path, grpc: grpcclient.InferenceServerClient
) -> None:
    rng = np.random.default_rng(2)
    feeds = {
        "a": rng.standard_normal((7, 3)).astype(np.float32),
        "b": rng.standard_normal((7, 2)).astype(np.float32),
    }
    result = grpc.infer("keras_two", _inputs(grpcclient, feeds, {"a": "FP32", "b": "FP32"}))
    expected = tf_reference(tf_models, "keras_two", feeds)["output_0"]
    np.testing.assert_allclose(result.as_numpy("output_0"), expected, rtol=1e-6)


@pytest.mark.parametrize("wire", ["http", "grpc"])
def test_strings_over_both_wires(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient, wire: str
) -> None:
    client, module = (http, httpclient) if wire == "http" else (grpc, grpcclient)
    text = np.array([b"serve", b"", b"TensorFlow"], dtype=object)
    result = client.infer("strings", _inputs(module, {"text": text}, {"text": "BYTES"}))
    assert list(result.as_numpy("upper")) == [b"SERVE", b"", b"TENSORFLOW"]
    np.testing.assert_array_equal(result.as_numpy("length"), [5, 0, 10])


def test_fp16_and_bf16_inputs(http: httpclient.InferenceServerClient) -> None:
    a = np.array([[0.5, -1.25], [3.0, 1e-3]], np.float16)
    b = np.array([[1.0, -2.5], [3.0, 0.125]], ml_dtypes.bfloat16)
    result = http.infer("half", _inputs(httpclient, {"a": a, "b": b}, {"a": "FP16", "b": "BF16"}))
    doubled = result.as_numpy("a2")
    assert doubled.dtype == np.float16
    np.testing.assert_array_equal(doubled, a * 2)
    np.testing.assert_array_equal(
        result.as_numpy("b2").astype(np.float32), b.astype(np.float32) * 2
    )


def test_a_value_tensorflow_refuses_is_a_400_naming_it(
    server: ServerProcess, grpc: grpcclient.InferenceServerClient
) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["abc"]}]}
    response = httpx.post(f"{server.base}/v2/models/parse/infer", json=body, timeout=30)
    assert response.status_code == 400
    message = response.json()["error"]
    assert "model 'parse' version 1: TensorFlow rejected the input" in message and "abc" in message
    assert "Traceback" not in message and "Graph execution" not in message
    with pytest.raises(InferenceServerException, match="INVALID_ARGUMENT"):
        text = np.array([b"abc"], dtype=object)
        grpc.infer("parse", _inputs(grpcclient, {"text": text}, {"text": "BYTES"}))
    ok = httpx.post(
        f"{server.base}/v2/models/parse/infer",
        json={"inputs": [{**body["inputs"][0], "data": ["2.5"]}]},
        timeout=30,
    )
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [2.5]


def test_a_config_that_disagrees_is_unavailable_with_the_reason(
    server: ServerProcess, http: httpclient.InferenceServerClient
) -> None:
    index = {row["name"]: row for row in http.get_model_repository_index()}
    assert index["seed_wrong"]["state"] == "UNAVAILABLE"
    assert (
        "model 'seed_wrong': input 'x' dims: the model file has [2], the config says [3]"
        in index["seed_wrong"]["reason"]
    )
    assert all(index[m]["state"] == "READY" for m in ("seed", "keras_two", "strings", "half"))
