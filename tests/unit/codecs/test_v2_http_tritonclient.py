"""The codec against the real client: tritonclient.http builds requests and parses responses."""

from __future__ import annotations

import numpy as np
import pytest
from v2_codec_helpers import DATATYPES, assert_same, sample

from accelserve.codecs.v2 import RequestedOutput
from accelserve.codecs.v2_http_decode import decode_infer_request
from accelserve.codecs.v2_http_encode import encode_infer_response

http = pytest.importorskip("tritonclient.http")
Client = http.InferenceServerClient


def client_input(name: str, datatype: str, array: np.ndarray, binary: bool):
    tensor = http.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_decodes_tritonclient_requests(datatype: str, binary: bool) -> None:
    if datatype == "BF16" and not binary:
        pytest.skip("tritonclient sends BF16 only as binary data")
    expected = sample(datatype, (2, 3))
    other = sample("INT32", (1, 16), seed=1)
    body, header_length = Client.generate_request_body(
        [client_input("x", datatype, expected, binary), client_input("y", "INT32", other, True)],
        outputs=[http.InferRequestedOutput("out", binary_data=binary)],
        request_id="abc",
        priority=3,
        timeout=1000,
        parameters={"tag": "t"},
    )
    decoded = decode_infer_request(body, header_length)
    assert_same(decoded.inputs["x"], expected)
    assert_same(decoded.inputs["y"], other)
    assert decoded.id == "abc"
    assert decoded.outputs == [RequestedOutput("out", binary)]
    assert decoded.parameters == {"priority": 3, "timeout": 1000, "tag": "t"}
    assert decoded.binary_data_output is False


def test_tritonclient_without_outputs_asks_for_binary_outputs() -> None:
    body, header_length = Client.generate_request_body(
        [client_input("x", "FP32", sample("FP32"), False)]
    )
    assert header_length is None
    decoded = decode_infer_request(body, header_length)
    assert decoded.outputs == [] and decoded.binary_data_output is True


@pytest.mark.parametrize("datatype", DATATYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_parses_responses(datatype: str, binary: bool) -> None:
    outputs = {"a": sample(datatype, (3, 2), seed=5), "b": sample("INT32", (1, 16), seed=6)}
    body, header_length = encode_infer_response(
        "simple", "1", "id-1", outputs, [], binary_data_output=binary
    )
    result = http.InferResult.from_response_body(body, header_length=header_length)
    response = result.get_response()
    assert response["model_name"] == "simple" and response["id"] == "id-1"
    for name, expected in outputs.items():
        actual = result.as_numpy(name)
        if datatype == "BYTES" and name == "a" and not binary:
            # JSON carries BYTES as text: the client hands back str elements.
            assert actual.tolist() == [[e.decode() for e in row] for row in expected.tolist()]
            continue
        assert_same(actual, expected)


def test_simple_model_round_trip_through_the_client() -> None:
    """tritonclient's `simple` example: two INT32[1,16] in, sum and difference out."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    for binary in (True, False):
        body, header_length = Client.generate_request_body(
            [
                client_input("INPUT0", "INT32", a, binary),
                client_input("INPUT1", "INT32", b, binary),
            ],
            outputs=[
                http.InferRequestedOutput("OUTPUT0", binary_data=binary),
                http.InferRequestedOutput("OUTPUT1", binary_data=not binary),
            ],
        )
        request = decode_infer_request(body, header_length)
        x, y = request.inputs["INPUT0"], request.inputs["INPUT1"]
        payload, length = encode_infer_response(
            "simple",
            "1",
            request.id,
            {"OUTPUT0": x + y, "OUTPUT1": x - y},
            request.outputs,
            request.binary_data_output,
        )
        result = http.InferResult.from_response_body(payload, header_length=length)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
        kinds = {o["name"]: "parameters" in o for o in result.get_response()["outputs"]}
        assert kinds == {"OUTPUT0": binary, "OUTPUT1": not binary}
