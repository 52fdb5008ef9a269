"""The real tritonclient.http against a real server process, binary and JSON tensors."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import ServerProcess


@pytest.fixture()
def client(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


def _inputs(a: np.ndarray, b: np.ndarray, binary: bool) -> list[httpclient.InferInput]:
    inputs = []
    for name, data in (("INPUT0", a), ("INPUT1", b)):
        tensor = httpclient.InferInput(name, list(data.shape), "INT32")
        tensor.set_data_from_numpy(data, binary_data=binary)
        inputs.append(tensor)
    return inputs


def test_health_and_server_metadata(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "accelserve"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_config(client: httpclient.InferenceServerClient) -> None:
    assert client.is_model_ready("simple")
    metadata = client.get_model_metadata("simple")
    assert metadata["versions"] == ["1"]
    assert {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]} == {
        "INPUT0": ("INT32", [-1, 16]),
        "INPUT1": ("INT32", [-1, 16]),
    }
    config = client.get_model_config("simple")
    assert config["max_batch_size"] == 8
    assert config["input"][0]["dims"] == [16]
    assert config["input"][0]["data_type"] == "TYPE_INT32"
    assert config["instances"][0]["device"] == "cpu:0"


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 8])
def test_infer_simple(client: httpclient.InferenceServerClient, binary: bool, rows: int) -> None:
    rng = np.random.default_rng(rows)
    a = rng.integers(-1000, 1000, size=(rows, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(rows, 16), dtype=np.int32)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=binary),
    ]
    result = client.infer("simple", _inputs(a, b, binary), outputs=outputs, request_id="r1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    assert result.get_response()["id"] == "r1"


def test_infer_one_output_only(client: httpclient.InferenceServerClient) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    result = client.infer(
        "simple", _inputs(a, a, True), outputs=[httpclient.InferRequestedOutput("OUTPUT1")]
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros((1, 16), np.int32))
    assert result.as_numpy("OUTPUT0") is None


def test_autocompleted_config(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("simple_auto")
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] > 0
    assert "dynamic_batching" in config
    a = np.ones((2, 16), dtype=np.int32)
    result = client.infer("simple_auto", _inputs(a, a, True))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a * 2)


def test_statistics_shape(client: httpclient.InferenceServerClient) -> None:
    a = np.ones((2, 16), dtype=np.int32)
    before = client.get_inference_statistics("simple")["model_stats"][0]
    client.infer("simple", _inputs(a, a, True))
    after = client.get_inference_statistics("simple")["model_stats"][0]
    assert int(after["inference_count"]) == int(before["inference_count"]) + 2
    stats = after["inference_stats"]
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert set(stats[key]) == {"count", "ns"}
    assert int(stats["success"]["count"]) >= 1
    assert after["batch_stats"][0]["batch_size"] >= 1


def test_broken_model_is_unavailable_others_serve(client: httpclient.InferenceServerClient) -> None:
    index = {row["name"]: row for row in client.get_model_repository_index()}
    assert index["broken"]["state"] == "UNAVAILABLE"
    assert "model.onnx" in index["broken"]["reason"]
    assert index["simple"]["state"] == "READY"
    assert not client.is_model_ready("broken")
    a = np.ones((1, 16), dtype=np.int32)
    assert client.infer("simple", _inputs(a, a, True)).as_numpy("OUTPUT0") is not None
