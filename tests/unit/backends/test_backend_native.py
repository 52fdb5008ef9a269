"""Native backend: the documented dense format, run with accelserve.kernels on the CPU."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from backend_helpers import ABSENT_CUDA, ABSENT_TPU, config, needs_cuda, params, version_dir

from accelserve.backends.native import NativeBackend
from accelserve.backends.native_format import write_native_model
from accelserve.config import config_to_json
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError
from accelserve.repository import load_backend
from accelserve.types import TensorSpec

CPU = Device("cpu", 0)
RNG = np.random.default_rng(0)
MLP_WEIGHTS = {
    "layers.0.weight": RNG.standard_normal((16, 32)).astype(np.float32) / 4,
    "layers.0.bias": RNG.standard_normal(32).astype(np.float32),
    "layers.1.weight": RNG.standard_normal((32, 8)).astype(np.float32) / 4,
    "layers.1.bias": RNG.standard_normal(8).astype(np.float32),
}
MLP_LAYERS: list[dict[str, Any]] = [
    {"type": "linear", "weight": "layers.0.weight", "bias": "layers.0.bias", "activation": "relu"},
    {"type": "linear", "weight": "layers.1.weight", "bias": "layers.1.bias", "activation": "gelu"},
    {"type": "l2_normalize"},
]
IN16 = {"name": "x", "datatype": "FP32", "dims": [16]}
_erf = np.vectorize(math.erf)


def mlp_reference(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    h = np.maximum(x64 @ MLP_WEIGHTS["layers.0.weight"] + MLP_WEIGHTS["layers.0.bias"], 0)
    z = h @ MLP_WEIGHTS["layers.1.weight"] + MLP_WEIGHTS["layers.1.bias"]
    g = 0.5 * z * (1 + _erf(z / math.sqrt(2)))
    return g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("native_models")
    write_native_model(version_dir(root, "mlp"), MLP_LAYERS, MLP_WEIGHTS, IN16, "embedding")
    return root


def test_seed_linear_model_2x2(tmp_path: Path) -> None:
    """The seed's example: y = xW + b with a 2x2 W."""
    w = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    b = np.array([0.5, -0.5], np.float32)
    directory = write_native_model(
        version_dir(tmp_path, "linear"),
        [{"type": "linear", "weight": "W", "bias": "b", "activation": None}],
        {"W": w, "b": b},
        TensorSpec("INPUT0", "FP32", (2,)),
        "OUTPUT0",
    )
    description = json.loads((directory / "model.json").read_text())
    assert description["output"] == {"name": "OUTPUT0", "datatype": "FP32", "dims": [2]}
    cfg = config(name="linear")
    backend = load_backend(directory, cfg, CPU)
    assert config_to_json(cfg)["platform"] == "accelserve_native"
    assert backend.inputs == [TensorSpec("INPUT0", "FP32", (2,))]
    assert backend.outputs == [TensorSpec("OUTPUT0", "FP32", (2,))]
    x = np.array([[1.0, 1.0], [2.0, -1.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(backend.infer({"INPUT0": x})["OUTPUT0"], x @ w + b, rtol=1e-6)
    # w, b, and a C-ordered copy of w for one-row requests (kernels.cpu.linear.LinearChain)
    assert backend.memory_bytes() == 2 * w.nbytes + b.nbytes


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_mlp_with_l2_head_matches_numpy(root: Path, batch: int) -> None:
    backend = NativeBackend()
    backend.load(root / "mlp" / "1", config(name="mlp"), CPU)
    x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
    x.setflags(write=False)  # decoded request buffers are read-only
    y = backend.infer({"x": x})["embedding"]
    assert y.dtype == np.float32 and y.shape == (batch, 8)
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-6)


def test_fp16_and_bf16_models(tmp_path: Path) -> None:
    for datatype, dtype, tolerance in (
        ("FP16", np.float16, 1e-2),
        ("BF16", ml_dtypes.bfloat16, 5e-2),
    ):
        w = MLP_WEIGHTS["layers.0.weight"].astype(dtype)
        directory = write_native_model(
            version_dir(tmp_path, datatype),
            [{"type": "linear", "weight": "w", "bias": None, "activation": "silu"}],
            {"w": w},
            {"name": "x", "datatype": datatype, "dims": [16]},
            "y",
        )
        backend = NativeBackend()
        backend.load(directory, config(name=datatype), CPU)
        assert backend.outputs == [TensorSpec("y", datatype, (32,))]
        for rows in (1, 4):  # one row takes the chain's row kernel, several the batch kernel
            x = np.random.default_rng(rows).standard_normal((rows, 16)).astype(dtype)
            y = backend.infer({"x": x})["y"]
            assert y.dtype == np.dtype(dtype) and y.shape == (rows, 32)
            z = x.astype(np.float64) @ w.astype(np.float64)
            expected = z / (1 + np.exp(-z))
            np.testing.assert_allclose(
                y.astype(np.float64), expected, rtol=tolerance, atol=tolerance
            )


def test_a_head_only_model_holds_no_weights(tmp_path: Path) -> None:
    # Unused tensors in the file are neither moved to the device nor counted.
    unused = {"spare": np.ones((4, 4), np.float32)}
    layers = [{"type": "l2_normalize", "eps": 1e-6}]
    directory = write_native_model(version_dir(tmp_path, "head"), layers, unused, IN16, "unit")
    backend = NativeBackend()
    backend.load(directory, config(name="head"), CPU)
    assert backend.memory_bytes() == 0
    x = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
    y = backend.infer({"x": x})["unit"]
    np.testing.assert_allclose(y, x / np.linalg.norm(x, axis=-1, keepdims=True), rtol=1e-6)


def test_layers_from_config_parameters(tmp_path: Path) -> None:
    directory = write_native_model(version_dir(tmp_path, "p"), MLP_LAYERS, MLP_WEIGHTS, IN16, "e")
    (directory / "model.json").unlink()
    text = f"""
    platform: "accelserve_native"
    max_batch_size: 32
    input [{{ name: "x" data_type: TYPE_FP32 dims: [16] }}]
    output [{{ name: "e" data_type: TYPE_FP32 dims: [8] }}]
    {params(layers=json.dumps(MLP_LAYERS))}
    """
    backend = load_backend(directory, config(text, "p"), CPU)
    x = np.ones((3, 16), np.float32)
    np.testing.assert_allclose(backend.infer({"x": x})["e"], mlp_reference(x), rtol=1e-5, atol=1e-6)


def test_missing_input_is_an_execution_error(root: Path) -> None:
    backend = NativeBackend()
    backend.load(root / "mlp" / "1", config(name="mlp"), CPU)
    with pytest.raises(ModelExecutionError, match=r"^model 'mlp' version 1: input 'x' is missing$"):
        backend.infer({"y": np.ones((1, 16), np.float32)})
    with pytest.raises(ModelExecutionError, match=r"x.shape\[-1\] must equal w.shape\[0\]=16"):
        backend.infer({"x": np.ones((1, 5), np.float32)})
    backend.unload()
    assert backend.memory_bytes() == 0
    with pytest.raises(ModelExecutionError, match=r"the model is unloaded$"):
        backend.infer({"x": np.ones((1, 16), np.float32)})


def _linear(**overrides: Any) -> dict[str, Any]:
    return {"type": "linear", "weight": "layers.0.weight", "bias": "layers.0.bias"} | overrides


BAD_LAYERS = [
    (
        [{"type": "conv2d"}],
        r"layers\[0\].type: expected one of linear, l2_normalize; received 'conv2d'",
    ),
    ([_linear(activaton="relu")], r"layers\[0\]: unknown field\(s\) activaton for a linear layer"),
    ([_linear(activation="tanh")], r"layers\[0\].activation: expected null, relu, gelu or silu"),
    ([_linear(weight="nope")], r"layers\[0\].weight: expected a tensor name in model.safetensors"),
    (
        [_linear(bias="layers.1.bias")],
        r"layers\[0\].bias: 'layers.1.bias' has shape \[8\]; expected \[32\]",
    ),
    (
        [_linear(), _linear()],
        r"layers\[1\].weight: 'layers.0.weight' has shape \[16, 32\]; expected \[32, N\]",
    ),
    ([{"type": "l2_normalize", "eps": -1}], r"layers\[0\].eps: expected a number > 0"),
    ([], r"layers: expected a non-empty list"),
]


@pytest.mark.parametrize(("layers", "expected"), BAD_LAYERS)
def test_bad_layer_spec_is_a_clear_error(tmp_path: Path, layers: list[Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        write_native_model(tmp_path, layers, MLP_WEIGHTS, IN16, "y")
    assert not (tmp_path / "model.json").exists()  # checked before anything is written
    # The same description written by hand is refused at load, naming the model and file.
    directory = write_native_model(version_dir(tmp_path, "bad"), MLP_LAYERS, MLP_WEIGHTS, IN16, "y")
    description = json.loads((directory / "model.json").read_text())
    description["layers"] = layers
    (directory / "model.json").write_text(json.dumps(description))
    with pytest.raises(ConfigError, match=r"^model 'bad' version 1 model.json " + expected):
        NativeBackend().load(directory, config(name="bad"), CPU)


def test_bad_tensor_descriptions(tmp_path: Path) -> None:
    weights16 = {k: v.astype(np.float16) for k, v in MLP_WEIGHTS.items()}
    with pytest.raises(ConfigError, match=r"'layers.0.weight' is FP16; the input datatype is FP32"):
        write_native_model(tmp_path, MLP_LAYERS, weights16, IN16, "y")
    with pytest.raises(ConfigError, match=r"input.dims: expected at least one dim, the last one"):
        write_native_model(tmp_path, MLP_LAYERS, MLP_WEIGHTS, IN16 | {"dims": [-1]}, "y")
    with pytest.raises(ConfigError, match=r"layers\[0\].weight: 'layers.0.weight' has shape"):
        write_native_model(tmp_path, MLP_LAYERS, MLP_WEIGHTS, IN16 | {"dims": [3]}, "y")
    with pytest.raises(ConfigError, match=r"output: the layers produce FP32 \[8\]; .* FP32 \[9\]"):
        write_native_model(tmp_path, MLP_LAYERS, MLP_WEIGHTS, IN16, {"name": "y", "dims": [9]})
    with pytest.raises(ConfigError, match=r"input.datatype: expected one of .*; received 'INT8'"):
        write_native_model(tmp_path, MLP_LAYERS, MLP_WEIGHTS, IN16 | {"datatype": "INT8"}, "y")


def test_missing_files_and_absent_devices(root: Path, tmp_path: Path) -> None:
    empty = version_dir(tmp_path, "empty")
    with pytest.raises(
        ConfigError,
        match=r"^model 'empty' version 1: expected file 'model.safetensors' is missing$",
    ):
        NativeBackend().load(empty, config(name="empty"), CPU)
    no_json = version_dir(tmp_path, "nojson")
    (no_json / "model.safetensors").write_bytes(
        (root / "mlp" / "1" / "model.safetensors").read_bytes()
    )
    with pytest.raises(ConfigError, match=r"expected file 'model.json' is missing \(or a 'layers'"):
        NativeBackend().load(no_json, config(name="nojson"), CPU)
    (no_json / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"'model.safetensors' is not a safetensors file"):
        NativeBackend().load(no_json, config(name="nojson"), CPU)
    with pytest.raises(ConfigError, match=rf"device {ABSENT_CUDA} is not available to PyTorch"):
        NativeBackend().load(root / "mlp" / "1", config(name="mlp"), ABSENT_CUDA)
    with pytest.raises(ConfigError, match=r"device tpu:64 is not available to JAX here"):
        NativeBackend().load(root / "mlp" / "1", config(name="mlp"), ABSENT_TPU)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch", [1, 33])
def test_mlp_on_cuda_matches_numpy(root: Path, batch: int) -> None:
    backend = NativeBackend()
    backend.load(root / "mlp" / "1", config(name="mlp"), Device("cuda", 0))
    x = np.random.default_rng(batch).standard_normal((batch, 16)).astype(np.float32)
    y = backend.infer({"x": x})["embedding"]
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    # Triton's tl.dot may use TF32 on the GPU: looser than the CPU check.
    np.testing.assert_allclose(y, mlp_reference(x), rtol=2e-2, atol=2e-3)
