"""merge_inputs / split_outputs / batch_signature: pure functions on plain arrays."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.errors import ModelExecutionError
from accelserve.scheduling import batch_signature, merge_inputs, split_outputs
from accelserve.scheduling.batching import request_rows


def test_merge_concatenates_each_input_along_axis_0() -> None:
    a = {"x": np.arange(4, dtype=np.float32).reshape(2, 2), "ids": np.array([[1], [2]])}
    b = {"ids": np.array([[3]]), "x": np.full((1, 2), 9, np.float32)}
    merged = merge_inputs([a, b])
    np.testing.assert_array_equal(merged["x"], [[0, 1], [2, 3], [9, 9]])
    np.testing.assert_array_equal(merged["ids"], [[1], [2], [3]])
    assert merged["x"].dtype == np.float32


def test_merge_of_a_single_request_does_not_copy() -> None:
    inputs = {"x": np.ones((3, 2), np.float32)}
    merged = merge_inputs([inputs])
    assert merged is inputs
    assert merged["x"] is inputs["x"]


def test_merge_handles_bytes_tensors() -> None:
    a = {"s": np.array([b"ab"], dtype=object)}
    b = {"s": np.array([b"c", b""], dtype=object)}
    merged = merge_inputs([a, b])
    assert merged["s"].dtype == object
    assert merged["s"].tolist() == [b"ab", b"c", b""]


def test_split_gives_each_request_its_rows_as_views() -> None:
    out = {"y": np.arange(12).reshape(6, 2), "z": np.arange(6)}
    parts = split_outputs(out, [1, 3, 2])
    assert [p["y"].shape[0] for p in parts] == [1, 3, 2]
    np.testing.assert_array_equal(parts[1]["y"], [[2, 3], [4, 5], [6, 7]])
    np.testing.assert_array_equal(parts[2]["z"], [4, 5])
    assert np.shares_memory(parts[1]["y"], out["y"])


def test_split_of_a_single_request_keeps_the_arrays() -> None:
    out = {"y": np.zeros((4, 2))}
    [part] = split_outputs(out, [4])
    assert part["y"] is out["y"]


@pytest.mark.parametrize(
    "outputs",
    [{"y": np.zeros((3, 2))}, {"y": np.zeros((4, 2)), "bad": np.zeros(())}],
)
def test_split_rejects_an_output_whose_first_dim_is_not_the_batch_size(outputs: dict) -> None:
    with pytest.raises(ModelExecutionError) as info:
        split_outputs(outputs, [1, 3])
    assert "first dimension of 4" in str(info.value)
    assert "shape (" in str(info.value)


def test_split_rejects_a_non_dict_result() -> None:
    with pytest.raises(ModelExecutionError, match="returned list; expected a dict"):
        split_outputs([np.zeros(2)], [2])  # type: ignore[arg-type]


def test_signature_ignores_batch_dim_and_input_order() -> None:
    a = {"x": np.zeros((1, 3), np.float32), "m": np.zeros((1,), np.int64)}
    b = {"m": np.zeros((5,), np.int64), "x": np.zeros((5, 3), np.float32)}
    assert batch_signature(a) == batch_signature(b)
    assert hash(batch_signature(a)) == hash(batch_signature(b))


@pytest.mark.parametrize(
    "other",
    [
        {"x": np.zeros((1, 4), np.float32)},  # other non-batch shape
        {"x": np.zeros((1, 3), np.float64)},  # other dtype
        {"x": np.zeros((1, 3), np.float32), "extra": np.zeros((1,))},  # other inputs
        {"y": np.zeros((1, 3), np.float32)},  # other name
    ],
)
def test_signature_differs_when_requests_cannot_share_a_batch(other: dict) -> None:
    assert batch_signature({"x": np.zeros((2, 3), np.float32)}) != batch_signature(other)


def test_request_rows_is_the_first_dimension() -> None:
    assert request_rows({"x": np.zeros((4, 2))}) == 4
    assert request_rows({"x": np.zeros(())}) == 1
    assert request_rows({}) == 1
