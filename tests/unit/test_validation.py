"""Request validation on its own: ``prepare_inputs`` against a model's declared tensors."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.errors import InvalidArgumentError
from accelserve.model import ModelVersion
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.types import InferRequest, TensorSpec
from accelserve.validation import prepare_inputs


def _model(max_batch_size: int = 8) -> ModelVersion:
    config = ModelConfig(name="m", max_batch_size=max_batch_size)
    inputs = {
        "A": TensorSpec("A", "FP32", (4,)),
        "B": TensorSpec("B", "INT64", (-1,), optional=True),
        "R": TensorSpec("R", "FP32", (6,), optional=True, reshape=(2, 3)),
    }
    outputs = {"Y": TensorSpec("Y", "FP32", (4,))}
    return ModelVersion.in_process(config, "1", inputs, outputs)


def _fp32(*shape: int) -> np.ndarray:
    return np.zeros(shape, dtype=np.float32)


def test_a_valid_request_passes_and_reshapes() -> None:
    request = InferRequest(
        {"A": _fp32(2, 4), "B": np.zeros((2, 7), np.int64), "R": _fp32(2, 6)}, outputs=["Y"]
    )
    prepare_inputs(_model(), request)
    assert request.inputs["R"].shape == (2, 2, 3)
    assert request.inputs["B"].shape == (2, 7)  # variable dims accept any length


def test_an_unbatched_model_checks_the_whole_shape() -> None:
    prepare_inputs(_model(0), InferRequest({"A": _fp32(4)}))
    with pytest.raises(InvalidArgumentError, match=r"shape: expected \[4\]; received \[1, 4\]"):
        prepare_inputs(_model(0), InferRequest({"A": _fp32(1, 4)}))


@pytest.mark.parametrize(
    ("inputs", "outputs", "message"),
    [
        (
            {"A": _fp32(1, 4), "Z": _fp32(1)},
            [],
            "unexpected input 'Z'; the model's inputs are A, B, R",
        ),
        ({"B": np.zeros((1, 2), np.int64)}, [], "input 'A' is missing; expected inputs A"),
        (
            {"A": np.zeros((1, 4), np.int32)},
            [],
            "input 'A' datatype: expected FP32; received INT32",
        ),
        ({"A": _fp32(1, 5)}, [], r"input 'A' shape: expected \[-1, 4\]; received \[1, 5\]"),
        ({"A": _fp32(9, 4)}, [], r"batch size 9 is outside 1..8 \(max_batch_size\)"),
        ({"A": _fp32(0, 4)}, [], r"batch size 0 is outside 1..8"),
        (
            {"A": _fp32(2, 4), "B": np.zeros((3, 1), np.int64)},
            [],
            "input 'B': batch size 3 differs from the other inputs' batch size 2",
        ),
        ({"A": _fp32(1, 4)}, ["Q"], "unknown output 'Q' requested; the model's outputs are Y"),
    ],
)
def test_bad_requests_name_the_field_and_the_expected_and_received_values(
    inputs: dict[str, np.ndarray], outputs: list[str], message: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        prepare_inputs(_model(), InferRequest(inputs, outputs=outputs))
    assert "model 'm'" in caught.value.message
