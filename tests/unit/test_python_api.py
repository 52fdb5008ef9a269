"""accelserve.load(...): the in-process form of "deploy this model to a device"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import accelserve
from accelserve.errors import DeviceError, InvalidArgumentError
from tests.conftest import copy_example


@pytest.fixture(scope="module")
def simple_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example("simple", tmp_path_factory.mktemp("api"))


@pytest.mark.parametrize("device", ["cpu", "/device:CPU:0", "cpu:0"])
def test_load_and_infer(simple_dir: Path, device: str) -> None:
    model = accelserve.load(str(simple_dir), device=device)
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    out = model.infer({"INPUT0": a, "INPUT1": a})
    np.testing.assert_array_equal(out["OUTPUT0"], a * 2)
    np.testing.assert_array_equal(out["OUTPUT1"], np.zeros_like(a))
    assert model.inputs[0] == {"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]}
    model.close()


def test_absent_device_is_a_clear_error(simple_dir: Path) -> None:
    with pytest.raises(DeviceError, match="present"):
        accelserve.load(str(simple_dir), device="/device:GPU:3")


def test_bad_input_is_checked(simple_dir: Path) -> None:
    with accelserve.load(str(simple_dir)) as model:
        with pytest.raises(InvalidArgumentError, match="INPUT1"):
            model.infer({"INPUT0": np.zeros((1, 16), np.int32)})
        with pytest.raises(InvalidArgumentError, match="INT32"):
            model.infer({"INPUT0": np.zeros((1, 16)), "INPUT1": np.zeros((1, 16))})


def test_seed_linear_example_runs_on_the_kernels(tmp_path: Path) -> None:
    """y = xW + b, the seed's 2x2 example, deployed with one device string."""
    model_dir = copy_example("linear", tmp_path)
    with accelserve.load(str(model_dir), device="/device:CPU:0") as model:
        x = np.array([[1.0, 1.0], [2.0, -1.0]], np.float32)
        y = model.infer({"INPUT0": x})["OUTPUT0"]
    w = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    np.testing.assert_allclose(y, x @ w + np.array([0.5, -0.5], np.float32), rtol=1e-6)
