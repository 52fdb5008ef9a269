"""accelserve.load(model_dir, device=...) once per backend, on models the test builds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import accelserve
from accelserve.errors import DeviceError
from tests.model_builders import BUILDERS, mlp_reference


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api_backends")
    for build in BUILDERS.values():
        build(root)
    return root


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("device", ["cpu", "/device:CPU:0"])
def test_load_and_infer_each_backend(root: Path, name: str, device: str) -> None:
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    with accelserve.load(str(root / name), device=device) as model:
        assert str(model.device) == "cpu:0"
        assert model.inputs == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert model.outputs == [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}]
        y = model.infer({"x": x})["y"]
    assert y.dtype == np.float32 and y.shape == (3, 3)
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_a_host_device_that_is_absent_is_a_clear_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    with pytest.raises(DeviceError, match=r"cpu:2 is not present on this host; present: cpu:0"):
        accelserve.load(str(root / "jax_mlp"), device="cpu:2")
