"""Text into ONNX string inputs: a model that casts its string input to numbers, served over
HTTP JSON, HTTP binary and gRPC with tritonclient, and its string output back as bytes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess

CONFIG = """
platform: "onnxruntime_onnx"
max_batch_size: 8
input [{ name: "TEXT" data_type: TYPE_STRING dims: [ 3 ] }]
output [
  { name: "NUMBER" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "ECHO" data_type: TYPE_STRING dims: [ 3 ] }
]
"""


def build_string_cast(root: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["TEXT"], ["NUMBER"], to=TensorProto.FLOAT),
            helper.make_node("Identity", ["TEXT"], ["ECHO"]),
        ],
        "string_cast",
        [helper.make_tensor_value_info("TEXT", TensorProto.STRING, ["batch", 3])],
        [
            helper.make_tensor_value_info("NUMBER", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("ECHO", TensorProto.STRING, ["batch", 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    version = root / "string_cast" / "1"
    version.mkdir(parents=True)
    (root / "string_cast" / "config.pbtxt").write_text(CONFIG)
    onnx.save(model, str(version / "model.onnx"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("onnx_strings") / "models"
    build_string_cast(root)
    process = ServerProcess(root)
    yield process
    process.stop()


def _text(rows: list[list[bytes]]) -> np.ndarray:
    return np.array(rows, dtype=object)


NUMERIC = _text([[b"0", b"1.5", b"-42"], [b"1e3", b"7", b"0.25"]])
NUMBERS = np.array([[0.0, 1.5, -42.0], [1000.0, 7.0, 0.25]], dtype=np.float32)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_http_string_input_casts_to_numbers(server: ServerProcess, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.url)
    text = httpclient.InferInput("TEXT", list(NUMERIC.shape), "BYTES")
    text.set_data_from_numpy(NUMERIC, binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("NUMBER", binary_data=binary),
        httpclient.InferRequestedOutput("ECHO", binary_data=binary),
    ]
    result = client.infer("string_cast", [text], outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("NUMBER"), NUMBERS)
    echo = result.as_numpy("ECHO")
    assert echo is not None
    # tritonclient gives JSON text back as str, binary data as bytes
    as_bytes = [[v.encode() if isinstance(v, str) else bytes(v) for v in row] for row in echo]
    assert as_bytes == NUMERIC.tolist()


def test_grpc_string_input_casts_to_numbers(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    text = grpcclient.InferInput("TEXT", list(NUMERIC.shape), "BYTES")
    text.set_data_from_numpy(NUMERIC)
    result = client.infer("string_cast", [text])
    np.testing.assert_array_equal(result.as_numpy("NUMBER"), NUMBERS)
    echo = result.as_numpy("ECHO")
    assert echo is not None
    assert echo.tolist() == NUMERIC.tolist()


def test_non_utf8_text_is_a_clear_400(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.url)
    text = httpclient.InferInput("TEXT", [1, 3], "BYTES")
    text.set_data_from_numpy(_text([[b"1", b"\xff\xfe", b"2"]]), binary_data=True)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("string_cast", [text])
    assert caught.value.status() == "400"
    assert "'TEXT'" in str(caught.value) and "UTF-8" in str(caught.value)
    # The model keeps serving.
    good = httpclient.InferInput("TEXT", [1, 3], "BYTES")
    good.set_data_from_numpy(_text([[b"3", b"4", b"5"]]))
    number = client.infer("string_cast", [good]).as_numpy("NUMBER")
    np.testing.assert_array_equal(number, np.array([[3, 4, 5]], dtype=np.float32))


def test_text_that_is_no_number_is_a_400_naming_the_cast(server: ServerProcess) -> None:
    body = {
        "inputs": [
            {"name": "TEXT", "shape": [1, 3], "datatype": "BYTES", "data": ["1", "two", "3"]}
        ]
    }
    response = httpx.post(f"{server.base}/v2/models/string_cast/infer", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "'TEXT'" in error and "'two'" in error and "Cast" in error
