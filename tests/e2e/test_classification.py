"""Triton's classification extension and label_filename, through the real server with
tritonclient's class_count over HTTP (binary and JSON) and gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, copy_example
from tests.e2e.test_onnx_strings import build_string_cast

LABELS = ["dog", "cat", "bird", "fish"]


def build_scores(root: Path, name: str, config: str, dtype: int) -> None:
    """SCORES = INPUT (Identity), with labels for SCORES."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT"], ["SCORES"])],
        name,
        [helper.make_tensor_value_info("INPUT", dtype, ["batch", 4])],
        [helper.make_tensor_value_info("SCORES", dtype, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(config)
    (root / name / "labels.txt").write_text("\n".join(LABELS) + "\n")
    onnx.save(model, str(root / name / "1" / "model.onnx"))


SCORES_CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 4
input [{ name: "INPUT" data_type: TYPE_FP32 dims: [ 4 ] }]
output [{ name: "SCORES" data_type: TYPE_FP32 dims: [ 4 ] label_filename: "labels.txt" }]
"""
COUNTS_CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 0
input [{ name: "INPUT" data_type: TYPE_INT32 dims: [ 1, 4 ] }]
output [{ name: "SCORES" data_type: TYPE_INT32 dims: [ 1, 4 ] }]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    from onnx import TensorProto

    root = tmp_path_factory.mktemp("classes") / "models"
    build_scores(root, "scores", SCORES_CONFIG, TensorProto.FLOAT)
    build_scores(root, "counts", COUNTS_CONFIG, TensorProto.INT32)  # no labels, no batching
    build_scores(root, "missing_labels", SCORES_CONFIG.replace("labels.txt", "nope.txt"), 1)
    build_string_cast(root)
    copy_example("simple", root)
    process = ServerProcess(root)
    yield process
    process.stop()


SCORES = np.array([[0.1, 0.5, 0.9, 0.2], [0.7, 0.3, 0.0, 0.8]], dtype=np.float32)
TOP2 = [[b"0.900000:2:bird", b"0.500000:1:cat"], [b"0.800000:3:fish", b"0.700000:0:dog"]]


def _as_bytes(array: np.ndarray) -> list:
    return [[v.encode() if isinstance(v, str) else bytes(v) for v in row] for row in array]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_class_count(server: ServerProcess, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.url)
    tensor = httpclient.InferInput("INPUT", [2, 4], "FP32")
    tensor.set_data_from_numpy(SCORES, binary_data=binary)
    out = httpclient.InferRequestedOutput("SCORES", binary_data=binary, class_count=2)
    result = client.infer("scores", [tensor], outputs=[out])
    assert result.get_output("SCORES")["datatype"] == "BYTES"
    assert _as_bytes(result.as_numpy("SCORES")) == TOP2


def test_grpc_class_count(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    tensor = grpcclient.InferInput("INPUT", [2, 4], "FP32")
    tensor.set_data_from_numpy(SCORES)
    out = grpcclient.InferRequestedOutput("SCORES", class_count=2)
    result = client.infer("scores", [tensor], outputs=[out])
    assert result.as_numpy("SCORES").tolist() == TOP2


def test_integers_without_labels_and_k_past_the_classes(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.url)
    tensor = httpclient.InferInput("INPUT", [1, 4], "INT32")
    tensor.set_data_from_numpy(np.array([[3, 9, 1, 7]], dtype=np.int32))
    out = httpclient.InferRequestedOutput("SCORES", class_count=10)  # clipped to 4
    result = client.infer("counts", [tensor], outputs=[out]).as_numpy("SCORES")
    assert [bytes(v) for v in result] == [b"9:1", b"7:3", b"3:0", b"1:2"]


def test_missing_label_file_keeps_the_model_unavailable_with_its_reason(
    server: ServerProcess,
) -> None:
    index = httpx.post(f"{server.base}/v2/repository/index", json={}).json()
    row = next(r for r in index if r["name"] == "missing_labels")
    assert row["state"] == "UNAVAILABLE"
    assert "label_filename 'nope.txt': no such file" in row["reason"]


def test_bad_classification_requests_are_400s(server: ServerProcess) -> None:
    url = f"{server.base}/v2/models/scores/infer"
    data = {"name": "INPUT", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}
    for value, needle in ((0, "received an integer 0"), ("2", "received a string")):
        body = {
            "inputs": [data],
            "outputs": [{"name": "SCORES", "parameters": {"classification": value}}],
        }
        response = httpx.post(url, json=body)
        assert response.status_code == 400
        assert (
            "parameter 'classification': expected the number of classes" in response.json()["error"]
        )
        assert needle in response.json()["error"]
    # a BYTES output cannot be classified
    client = httpclient.InferenceServerClient(server.url)
    text = httpclient.InferInput("TEXT", [1, 3], "BYTES")
    text.set_data_from_numpy(np.array([[b"1", b"2", b"3"]], dtype=object))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(
            "string_cast", [text], outputs=[httpclient.InferRequestedOutput("ECHO", class_count=1)]
        )
    assert caught.value.status() == "400"
    assert "output 'ECHO': classification needs a numeric output" in caught.value.message()
    # the others keep serving
    tensor = httpclient.InferInput("INPUT", [1, 4], "FP32")
    tensor.set_data_from_numpy(SCORES[:1])
    np.testing.assert_array_equal(client.infer("scores", [tensor]).as_numpy("SCORES"), SCORES[:1])


def test_config_lists_the_label_file(server: ServerProcess) -> None:
    config = httpclient.InferenceServerClient(server.url).get_model_config("scores")
    assert config["output"][0]["label_filename"] == "labels.txt"
