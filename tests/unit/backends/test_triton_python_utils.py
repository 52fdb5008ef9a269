"""triton_python_backend_utils' own logic (no worker): type names, tensors, the config helper
auto_complete_config receives, a response sender's final flag, and which model.py files are
Triton-style."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from accelserve.backends.triton_python import is_triton_python
from accelserve.backends.triton_python import triton_python_backend_utils as pb
from accelserve.config import parse_config


class RecordingRuntime:
    """The worker's side, recorded: what the model sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, Any, int]] = []
        self.metrics: list[tuple[str, dict[str, str], float]] = []

    def send(self, tag: int, response: Any, flags: int) -> None:
        self.sent.append((tag, response, flags))

    def call(self, request: Any, decoupled: bool) -> list[Any]:
        raise AssertionError("not called here")

    def cancelled(self, tag: int) -> bool:
        return tag == 9

    def metric(self, family: Any, labels: dict[str, str], value: float) -> None:
        self.metrics.append((family.name, labels, value))


@pytest.fixture()
def runtime(monkeypatch: pytest.MonkeyPatch) -> RecordingRuntime:
    recording = RecordingRuntime()
    monkeypatch.setattr(pb, "_RUNTIME", recording)
    return recording


def test_type_names_and_numpy_types() -> None:
    assert pb.triton_string_to_numpy("TYPE_FP32") is np.float32
    assert pb.triton_string_to_numpy("TYPE_STRING") is np.object_
    assert pb.triton_string_to_numpy("TYPE_NOPE") is None
    assert pb.numpy_to_triton_type(np.int64) == 9
    assert pb.numpy_to_triton_type(np.dtype("S3")) == 13
    assert pb.triton_to_numpy_type(10) is np.float16


def test_tensor_round_trips_through_dlpack() -> None:
    tensor = pb.Tensor("X", np.arange(6, dtype=np.float32).reshape(2, 3))
    again = pb.Tensor.from_dlpack("Y", tensor.as_numpy())
    assert again.name() == "Y"
    np.testing.assert_array_equal(again.as_numpy(), tensor.as_numpy())
    assert pb.Tensor("S", np.array(["a", "b"])).as_numpy().dtype == object


def test_config_helper_adds_what_the_file_does_not_declare() -> None:
    config = pb.ModelConfig({"input": [{"name": "A", "data_type": "TYPE_INT32", "dims": [1]}]})
    config.add_input({"name": "A", "data_type": "TYPE_FP32", "dims": [9]})  # declared: kept
    config.add_output({"name": "B", "data_type": "TYPE_FP32", "dims": [2]})
    config.set_max_batch_size(8)
    config.set_dynamic_batching()
    config.set_model_transaction_policy({"decoupled": True})
    data = config.as_dict()
    assert data["input"] == [{"name": "A", "data_type": "TYPE_INT32", "dims": [1]}]
    assert data["output"][0]["name"] == "B" and config.max_batch_size() == 8
    assert pb.using_decoupled_model_transaction_policy(data)
    assert pb.get_output_config_by_name(data, "B") == data["output"][0]
    assert pb.get_input_config_by_name(data, "missing") is None


def test_sender_refuses_to_send_after_the_final_flag(runtime: RecordingRuntime) -> None:
    request = pb.InferenceRequest(inputs=[pb.Tensor("X", np.zeros(1))])
    request._tag = 4
    sender = request.get_response_sender()
    response = pb.InferenceResponse([pb.Tensor("Y", np.ones(1))])
    sender.send(response)
    sender.send(flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    with pytest.raises(pb.TritonModelException, match="already sent the final flag"):
        sender.send(response)
    assert [(tag, flags) for tag, _, flags in runtime.sent] == [(4, 0), (4, 1)]
    with pytest.raises(pb.TritonModelException, match="expects an InferenceResponse"):
        request2 = pb.InferenceRequest()
        request2._tag = 5
        request2.get_response_sender().send("text")  # type: ignore[arg-type]


def test_cancellation_and_requests_built_by_a_model(runtime: RecordingRuntime) -> None:
    request = pb.InferenceRequest(parameters={"k": 1})
    assert request.parameters() == '{"k": 1}'
    assert not request.is_cancelled()  # built by the model: never cancelled
    with pytest.raises(pb.TritonModelException, match="only a request execute"):
        request.get_response_sender()
    request._tag = 9
    assert request.is_cancelled()


def test_metrics_keep_their_value_and_report_each_change(runtime: RecordingRuntime) -> None:
    family = pb.MetricFamily("requests", "requests seen", pb.MetricFamily.COUNTER)
    metric = family.Metric(labels={"model": "m"})
    metric.increment(2)
    assert metric.value() == 2
    with pytest.raises(pb.TritonModelException, match="cannot be set"):
        metric.set(5)
    with pytest.raises(pb.TritonModelException, match="cannot be incremented by a negative"):
        metric.increment(-1)
    assert runtime.metrics == [("requests", {"model": "m"}, 0.0), ("requests", {"model": "m"}, 2.0)]
    with pytest.raises(pb.TritonModelException, match="histograms"):
        pb.MetricFamily("h", "a histogram", pb.MetricFamily.HISTOGRAM)


@pytest.mark.parametrize(
    ("config", "code", "expected"),
    [
        ('backend: "python"', "class TritonPythonModel:\n    pass\n", True),
        ('backend: "python"', "class Model:\n    pass\n", False),
        ("", "class TritonPythonModel(object):\n    pass\n", True),
        (
            'backend: "python" parameters { key: "python_class" value { string_value: "X" } }',
            "class TritonPythonModel:\n    pass\n",
            False,
        ),
        ('platform: "onnxruntime_onnx"', "class TritonPythonModel:\n    pass\n", False),
    ],
)
def test_which_models_are_triton_style(
    tmp_path: Path, config: str, code: str, expected: bool
) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.py").write_text(code)
    assert is_triton_python(tmp_path, parse_config(config)) is expected
