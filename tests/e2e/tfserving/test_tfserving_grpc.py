"""TF Serving's gRPC API through the real server, with stubs over the generated messages (what
``prediction_service_pb2_grpc`` does: the same method paths and bytes): Predict with typed
values and tensor_content equal to KServe V2's answer, GetModelMetadata, GetModelStatus, and
every error with its status code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton

from accelserve.protocol import tfserving_apis_pb2 as pb
from accelserve.protocol.tf_framework_pb2 import DataType, TensorProto
from tests.conftest import ServerProcess

X0 = np.arange(16, dtype=np.int32)
X1 = np.full(16, 3, dtype=np.int32)


class Stub:
    """PredictionService and ModelService over one channel."""

    def __init__(self, channel: grpc.Channel) -> None:
        def method(service: str, name: str, request: Any, response: Any) -> Any:
            return channel.unary_unary(
                f"/tensorflow.serving.{service}/{name}",
                request_serializer=request.SerializeToString,
                response_deserializer=response.FromString,
            )

        self.Predict = method("PredictionService", "Predict", pb.PredictRequest, pb.PredictResponse)
        self.GetModelMetadata = method(
            "PredictionService",
            "GetModelMetadata",
            pb.GetModelMetadataRequest,
            pb.GetModelMetadataResponse,
        )
        self.Classify = method(
            "PredictionService", "Classify", pb.ClassificationRequest, pb.ClassificationResponse
        )
        self.GetModelStatus = method(
            "ModelService", "GetModelStatus", pb.GetModelStatusRequest, pb.GetModelStatusResponse
        )
        self.raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
        self.multi = channel.unary_unary("/tensorflow.serving.PredictionService/MultiInference")


@pytest.fixture(scope="module")
def stub(tfs_server: ServerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(f"127.0.0.1:{tfs_server.grpc_port}") as channel:
        yield Stub(channel)


def _shape(tensor: TensorProto, shape: tuple[int, ...]) -> None:
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)


def content(array: np.ndarray, dtype: int) -> TensorProto:
    tensor = TensorProto(
        dtype=dtype, tensor_content=array.astype(array.dtype.newbyteorder("<")).tobytes()
    )
    _shape(tensor, array.shape)
    return tensor


def typed(array: np.ndarray) -> TensorProto:
    tensor = TensorProto(dtype=DataType.DT_INT32)
    tensor.int_val.extend(array.ravel().tolist())
    _shape(tensor, array.shape)
    return tensor


def decode(tensor: TensorProto) -> np.ndarray:
    dtypes = {DataType.DT_INT32: "<i4", DataType.DT_FLOAT: "<f4"}
    shape = [d.size for d in tensor.tensor_shape.dim]
    return np.frombuffer(tensor.tensor_content, dtype=dtypes[tensor.dtype]).reshape(shape)


def _request(model: str, version: int | None = None, **inputs: TensorProto) -> pb.PredictRequest:
    request = pb.PredictRequest(model_spec=pb.ModelSpec(name=model))
    if version is not None:
        request.model_spec.version.value = version
    for name, tensor in inputs.items():
        request.inputs[name].CopyFrom(tensor)
    return request


def test_predict_equals_v2(stub: Stub, tfs_server: ServerProcess) -> None:
    a, b = np.stack([X0, X1]), np.stack([X1, X0])
    client = triton.InferenceServerClient(f"127.0.0.1:{tfs_server.grpc_port}")
    inputs = [
        triton.InferInput("INPUT0", [2, 16], "INT32"),
        triton.InferInput("INPUT1", [2, 16], "INT32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    want = client.infer("simple", inputs)
    # Typed int_val for one input, tensor_content for the other.
    response = stub.Predict(
        _request("simple", INPUT0=typed(a), INPUT1=content(b, DataType.DT_INT32))
    )
    assert response.model_spec.name == "simple" and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    for name in ("OUTPUT0", "OUTPUT1"):
        assert response.outputs[name].dtype == DataType.DT_INT32
        np.testing.assert_array_equal(decode(response.outputs[name]), want.as_numpy(name))


def test_output_filter_and_version(stub: Stub) -> None:
    request = _request("versioned", 1, INPUT0=typed(X0[None]), INPUT1=typed(X1[None]))
    request.output_filter.append("OUTPUT1")
    response = stub.Predict(request)
    assert list(response.outputs) == ["OUTPUT1"] and response.model_spec.version.value == 1
    np.testing.assert_array_equal(decode(response.outputs["OUTPUT1"]), (X0 - X1)[None])


def test_last_typed_value_repeats(stub: Stub) -> None:
    # tf.make_tensor_proto(7, shape=[1, 16]) sends one value for the whole tensor.
    seven = TensorProto(dtype=DataType.DT_INT32, int_val=[7])
    _shape(seven, (1, 16))
    response = stub.Predict(_request("simple", INPUT0=seven, INPUT1=typed(X1[None])))
    np.testing.assert_array_equal(decode(response.outputs["OUTPUT0"]), np.full((1, 16), 10))


def test_bytes_in_and_out(stub: Stub) -> None:
    text = TensorProto(dtype=DataType.DT_STRING, string_val=[b"ab", b"\x00\xff"])
    _shape(text, (2, 1))
    response = stub.Predict(_request("text", text=text))
    assert list(response.outputs["upper"].string_val) == [b"AB", b"\x00\xff"]
    assert list(response.outputs["raw_bytes"].string_val) == [b"ab\xff", b"\x00\xff\xff"]
    assert decode(response.outputs["length"]).tolist() == [[2], [2]]


def test_float_values(stub: Stub) -> None:
    x = np.array([[1, 2, 3, 4]], np.float32)
    by_value = TensorProto(dtype=DataType.DT_FLOAT, float_val=x.ravel().tolist())
    _shape(by_value, x.shape)
    first = decode(stub.Predict(_request("onnx_mlp", x=by_value)).outputs["y"])
    second = decode(
        stub.Predict(_request("onnx_mlp", x=content(x, DataType.DT_FLOAT))).outputs["y"]
    )
    np.testing.assert_array_equal(first, second)
    assert first.shape == (1, 3)


def test_metadata(stub: Stub) -> None:
    request = pb.GetModelMetadataRequest(model_spec=pb.ModelSpec(name="simple"))
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request)
    assert response.model_spec.name == "simple" and response.model_spec.version.value == 1
    packed = response.metadata["signature_def"]
    assert packed.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    signature = pb.SignatureDefMap.FromString(packed.value).signature_def["serving_default"]
    assert signature.method_name == "tensorflow/serving/predict"
    assert sorted(signature.inputs) == ["INPUT0", "INPUT1"]
    info = signature.outputs["OUTPUT0"]
    assert info.dtype == DataType.DT_INT32
    assert [d.size for d in info.tensor_shape.dim] == [-1, 16]


def test_status(stub: Stub) -> None:
    spec = pb.ModelSpec(name="versioned")
    response = stub.GetModelStatus(pb.GetModelStatusRequest(model_spec=spec))
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (1, pb.ModelVersionStatus.AVAILABLE),
        (2, pb.ModelVersionStatus.AVAILABLE),
    ]
    broken = stub.GetModelStatus(pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name="broken")))
    assert broken.model_version_status[0].state == pb.ModelVersionStatus.END
    assert "model.onnx" in broken.model_version_status[0].status.error_message


def _code(call: Any, *args: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(*args)
    return info.value.code(), info.value.details()


def test_errors(stub: Stub) -> None:
    ok = {"INPUT0": typed(X0[None]), "INPUT1": typed(X1[None])}
    NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
    code, text = _code(stub.Predict, _request("nope", **ok))
    assert code == NOT_FOUND and "nope" in text
    code, text = _code(stub.Predict, _request("simple", 7, **ok))
    assert code == NOT_FOUND and "version 7" in text
    labelled = _request("simple", **ok)
    labelled.model_spec.version_label = "stable"
    assert _code(stub.Predict, labelled)[0] == NOT_FOUND
    other = _request("simple", **ok)
    other.model_spec.signature_name = "classify"
    code, text = _code(stub.Predict, other)
    assert code == INVALID and '"classify" not found' in text
    short = TensorProto(dtype=DataType.DT_INT32, tensor_content=b"\x00" * 10)
    _shape(short, (1, 16))
    code, text = _code(stub.Predict, _request("simple", INPUT0=short, INPUT1=ok["INPUT1"]))
    assert code == INVALID and "10 bytes" in text and "64" in text
    floats = content(X0[None].astype(np.float32), DataType.DT_FLOAT)
    code, text = _code(stub.Predict, _request("simple", INPUT0=floats, INPUT1=ok["INPUT1"]))
    assert code == INVALID and "INT32" in text and "FP32" in text
    code, text = _code(stub.Predict, _request("simple", INPUTX=ok["INPUT0"], INPUT1=ok["INPUT1"]))
    assert code == INVALID and "INPUTX" in text
    filtered = _request("simple", **ok)
    filtered.output_filter.append("OUTPUT9")
    code, text = _code(stub.Predict, filtered)
    assert code == INVALID and "OUTPUT9" in text
    code, text = _code(stub.raw, b"\xff\xff\xff")
    assert code == INVALID and "malformed PredictRequest" in text
    code, text = _code(
        stub.Classify, pb.ClassificationRequest(model_spec=pb.ModelSpec(name="simple"))
    )
    assert code == INVALID and "no classify signature" in text
    no_field = pb.GetModelMetadataRequest(model_spec=pb.ModelSpec(name="simple"))
    code, text = _code(stub.GetModelMetadata, no_field)
    assert code == INVALID and "signature_def" in text
    code, text = _code(stub.Predict, _request("", **ok))
    assert code == INVALID and "model_spec.name" in text
    status = pb.GetModelStatusRequest(model_spec=pb.ModelSpec(name="nope"))
    assert _code(stub.GetModelStatus, status)[0] == NOT_FOUND
    assert _code(stub.multi, b"")[0] == grpc.StatusCode.UNIMPLEMENTED
