"""accelserve.export's bad arguments: each a clear InvalidArgumentError naming the argument,
what it expects and what it received, raised before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import accelserve
from accelserve.errors import InvalidArgumentError

X = np.ones((2, 4), np.float32)


class Linear(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown format",
        {"format": "tflite"},
        r"format: expected one of pt2, onnx, savedmodel, "
        r"jax \(or None for the model's default\); received 'tflite'",
    ),
    (
        "format of another framework",
        {"format": "savedmodel"},
        r"format: a torch.nn.Module exports to pt2 or onnx; received 'savedmodel'",
    ),
    (
        "example_inputs missing",
        {"example_inputs": None},
        r"example_inputs: expected an array, a tuple or list of arrays, or a dict of arrays by input "
        r"name; received None",
    ),
    (
        "example_inputs of the wrong type",
        {"example_inputs": "x"},
        r"example_inputs: expected an array, a tuple or list.*; received str",
    ),
    (
        "an example that is not an array",
        {"example_inputs": [X, [1, 2]]},
        r"example_inputs\[1\]: expected an array \(NumPy, torch, TensorFlow or JAX\); received list",
    ),
    ("no examples", {"example_inputs": ()}, r"example_inputs: expected .*; received empty"),
    (
        "max_batch_size negative",
        {"max_batch_size": -1},
        r"max_batch_size: expected >= 0; received -1",
    ),
    (
        "max_batch_size not an integer",
        {"max_batch_size": 2.5},
        r"max_batch_size: expected an integer >= 0; received 2.5",
    ),
    (
        "examples above max_batch_size",
        {"max_batch_size": 1},
        r"example_inputs: expected a batch of 1 to max_batch_size \(1\) rows; received 2",
    ),
    (
        "input_names of the wrong count",
        {"input_names": ["a", "b"]},
        r"input_names: expected 1 names \(one per example input\); received \['a', 'b'\]",
    ),
    (
        "output_names not strings",
        {"output_names": [1]},
        r"output_names: expected a list of non-empty strings; received \[1\]",
    ),
    (
        "params for a torch model",
        {"params": {"w": 1}},
        r"params: expected None for torch models.*; received dict",
    ),
    (
        "opset for pt2",
        {"opset": 18},
        r"opset: applies to format 'onnx'; this export's format is 'pt2'",
    ),
    ("atol negative", {"atol": -1e-3}, r"atol: expected a number >= 0; received -0.001"),
    (
        "reference not callable",
        {"reference": 3},
        r"reference: expected a function of the inputs by name; received int",
    ),
    (
        "version not a number",
        {"version": "latest"},
        r"version: expected an integer >= 1; received 'latest'",
    ),
]


@pytest.mark.parametrize(("case", "arguments", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_argument_is_named(
    tmp_path: Path, case: str, arguments: dict[str, Any], message: str
) -> None:
    options: dict[str, Any] = {"example_inputs": X, "progress": False, **arguments}
    with pytest.raises(InvalidArgumentError, match=message):
        accelserve.export(Linear(), tmp_path / "repo" / "m", **options)
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("target", ["justaname", "", "repo/", "repo/.hidden", 42])
def test_target_must_be_repo_slash_name(tmp_path: Path, target: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"target: expected 'REPO/NAME'.*; received"):
        accelserve.export(Linear(), target, example_inputs=X, progress=False)


def test_unsupported_model_type_names_what_is_supported(tmp_path: Path) -> None:
    with pytest.raises(
        InvalidArgumentError,
        match=r"model: expected a torch.nn.Module, a TensorFlow module or Keras model, a JAX "
        r"function \(with params=\), an onnx.ModelProto or a model file path; received "
        r"builtins.dict",
    ):
        accelserve.export({"w": 1}, tmp_path / "r" / "m", example_inputs=X, progress=False)


def test_a_taken_version_is_refused_with_the_next_free_one(tmp_path: Path) -> None:
    (tmp_path / "r" / "m" / "1").mkdir(parents=True)
    with pytest.raises(
        InvalidArgumentError,
        match=r"version: model 'm' already has version 1; expected a free version \(next free: 2\)",
    ):
        accelserve.export(
            Linear(), tmp_path / "r" / "m", example_inputs=X, version=1, progress=False
        )


def test_a_file_that_is_no_model_needs_a_format(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0")
    with pytest.raises(InvalidArgumentError, match=r"format: '.*weights.bin' is neither a .onnx"):
        accelserve.export(str(path), tmp_path / "r" / "m", progress=False)


def test_input_names_with_an_example_dict_is_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"input_names: the keys of the example_inputs"):
        accelserve.export(
            Linear(),
            tmp_path / "r" / "m",
            example_inputs={"x": X},
            input_names=["y"],
            progress=False,
        )


def test_an_ensembles_name_is_refused(tmp_path: Path) -> None:
    model_dir = tmp_path / "r" / "pipeline"
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text('platform: "ensemble"\n')
    with pytest.raises(InvalidArgumentError, match=r"target: model 'pipeline' is an ensemble"):
        accelserve.export(Linear(), model_dir, example_inputs=X, progress=False)
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.pbtxt"]
