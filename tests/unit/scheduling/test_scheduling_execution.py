"""execute_batch (merge -> infer -> split with timings) and client-safe failure messages."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.errors import ModelExecutionError, QueueFullError
from accelserve.scheduling.execution import client_safe, execute_batch, failure_message


def double(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": inputs["x"] * 2}


def test_execute_batch_merges_runs_splits_and_times_each_phase() -> None:
    inputs = [{"x": np.full((n, 2), n, np.float32)} for n in (1, 3)]
    parts, start_ns, input_ns, infer_ns, output_ns = execute_batch(
        double, inputs, [1, 3], split=True
    )
    np.testing.assert_array_equal(parts[0]["y"], [[2, 2]])
    np.testing.assert_array_equal(parts[1]["y"], np.full((3, 2), 6))
    assert min(start_ns, input_ns, infer_ns, output_ns) >= 0
    assert infer_ns > 0


def test_execute_batch_without_a_batch_dimension_passes_arrays_whole() -> None:
    x = np.arange(5, dtype=np.int32)
    [part], *_ = execute_batch(double, [{"x": x}], [1], split=False)
    np.testing.assert_array_equal(part["y"], x * 2)
    with pytest.raises(ModelExecutionError, match="returned tuple; expected a dict"):
        execute_batch(lambda _: (x,), [{"x": x}], [1], split=False)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            RuntimeError("cannot open /home/ann/repo/m/1/model.onnx: bad"),
            "RuntimeError: cannot open model.onnx: bad",
        ),
        (OSError(r"no file C:\Users\ann\models\model.onnx"), "OSError: no file model.onnx"),
        (
            ValueError("shape 3/4 and ratio a/b, not x / y"),
            "ValueError: shape 3/4 and ratio a/b, not x / y",
        ),
        (KeyError("out"), "KeyError: 'out'"),
        (MemoryError(), "MemoryError"),
        (QueueFullError("as written /a/b/c"), "as written /a/b/c"),
    ],
)
def test_client_safe_strips_absolute_paths_only(exc: BaseException, expected: str) -> None:
    assert client_safe(exc) == expected


def test_failure_message_names_model_and_batch_size() -> None:
    message = failure_message("simple", 6, ZeroDivisionError("division by zero"))
    assert message == (
        "model 'simple' failed to execute a batch of size 6: ZeroDivisionError: division by zero"
    )
