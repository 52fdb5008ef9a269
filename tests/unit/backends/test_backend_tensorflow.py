"""TensorFlow SavedModel backend, in process through ``accelserve.load``: results equal
TensorFlow's own, the config is completed from the signature and checked against it, BYTES,
FP16 and BF16 tensors, signature choice, parameters, placement and error kinds."""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import accelserve
from accelserve.devices import Device
from accelserve.errors import ConfigError, DeviceError, InvalidArgumentError
from accelserve.protocol.model_config_pb2 import DataType
from accelserve.repository import load_backend
from tests.tf_builders import SEED_W, place, tf_reference
from tests.unit.backends.backend_helpers import ABSENT_TPU, config, params

pytest.importorskip("tensorflow")

X = np.random.default_rng(0).standard_normal((100, 2)).astype(np.float32)


def _repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


def test_seed_model_without_config_is_completed_and_matches_tensorflow(
    tf_models: Path, tmp_path: Path
) -> None:
    model_dir = place(tf_models, "seed", _repo(tmp_path), "seed")
    model = accelserve.load(model_dir, device="/device:CPU:0")
    try:
        x = X[:4]  # the completed config batches up to 4, as Triton's would
        result = model.infer({"x": x})["y"]
        np.testing.assert_allclose(result, tf_reference(tf_models, "seed", {"x": x})["y"])
        np.testing.assert_allclose(result, x @ SEED_W, rtol=1e-5, atol=1e-6)
        cfg = model.config
        assert cfg.platform == "tensorflow_savedmodel"
        assert cfg.max_batch_size == 4 and cfg.HasField("dynamic_batching")  # a leading None
        assert [(t.name, list(t.dims)) for t in cfg.input] == [("x", [2])]
        assert [(t.name, list(t.dims)) for t in cfg.output] == [("y", [2])]
    finally:
        model.close()


def test_keras_export_with_two_inputs(tf_models: Path, tmp_path: Path) -> None:
    model_dir = place(tf_models, "keras_two", _repo(tmp_path), "k", "max_batch_size: 128\n")
    model = accelserve.load(model_dir)
    rng = np.random.default_rng(1)
    feeds = {
        "a": rng.standard_normal((5, 3)).astype(np.float32),
        "b": rng.standard_normal((5, 2)).astype(np.float32),
    }
    try:
        assert [t.name for t in model.config.input] == ["a", "b"]  # the model's own order
        result = model.infer(feeds)
        expected = tf_reference(tf_models, "keras_two", feeds)
        assert set(result) == set(expected) == {"output_0"}
        np.testing.assert_allclose(result["output_0"], expected["output_0"], rtol=1e-6)
    finally:
        model.close()


def test_strings_in_and_out_and_a_chosen_signature(tf_models: Path, tmp_path: Path) -> None:
    root = _repo(tmp_path)
    model = accelserve.load(place(tf_models, "strings", root, "s"))
    text = np.array([b"abc", b"", "\u00e9t\u00e9".encode()], dtype=object)
    try:
        result = model.infer({"text": text})
        assert result["upper"].dtype == object
        assert list(result["upper"]) == [b"ABC", b"", "\u00e9T\u00e9".encode()]
        np.testing.assert_array_equal(result["length"], [3, 0, 5])  # bytes, as TensorFlow
        assert [DataType.Name(t.data_type) for t in model.config.input] == ["TYPE_STRING"]
    finally:
        model.close()
    parse = place(tf_models, "strings", root, "p", params(signature_name="parse"))
    model = accelserve.load(parse)
    try:
        np.testing.assert_array_equal(
            model.infer({"text": np.array([b"1.5", b"-2"], dtype=object)})["number"], [1.5, -2]
        )
        # A value TensorFlow refuses is the request's fault: InvalidArgumentError, not a crash.
        with pytest.raises(InvalidArgumentError) as info:
            model.infer({"text": np.array([b"abc"], dtype=object)})
        message = str(info.value)
        assert "model 'p' version 1: TensorFlow rejected the input" in message
        assert "abc" in message and "Graph execution" not in message
    finally:
        model.close()


def test_fp16_and_bf16(tf_models: Path, tmp_path: Path) -> None:
    model = accelserve.load(place(tf_models, "half", _repo(tmp_path), "h"))
    a = np.array([[1.5, -2.25]], np.float16)
    b = np.array([[0.5, 3.0]], ml_dtypes.bfloat16)
    try:
        types = {t.name: DataType.Name(t.data_type) for t in model.config.input}
        assert types == {"a": "TYPE_FP16", "b": "TYPE_BF16"}
        result = model.infer({"a": a, "b": b})
        assert result["a2"].dtype == np.float16 and result["b2"].dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(result["a2"], a * 2)
        np.testing.assert_array_equal(result["b2"].astype(np.float32), [[1.0, 6.0]])
    finally:
        model.close()


MISMATCHES = {
    "dims": (
        'max_batch_size: 8\ninput [{ name: "x" data_type: TYPE_FP32 dims: [3] }]\n',
        "model 'bad': input 'x' dims: the model file has [2], the config says [3]",
    ),
    "datatype": (
        'max_batch_size: 8\ninput [{ name: "x" data_type: TYPE_FP16 dims: [2] }]\n',
        "model 'bad': input 'x' data_type: the model file has TYPE_FP32, the config says TYPE_FP16",
    ),
    "name": (
        'max_batch_size: 8\noutput [{ name: "z" data_type: TYPE_FP32 dims: [2] }]\n',
        "model 'bad': output 'z' in the config is not in the model file; the file has y",
    ),
    "signature": (
        params(signature_name="predict"),
        "model 'bad' version 1 parameter 'signature_name': expected one of the SavedModel's "
        "signatures ['serving_default']; received 'predict'",
    ),
    "jit_compile": (
        params(jit_compile="maybe"),
        "parameter 'jit_compile': expected true or false; received 'maybe'",
    ),
    "threads": (
        params(intra_op_thread_count="two"),
        "parameter 'intra_op_thread_count': expected an integer >= 0; received 'two'",
    ),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_a_config_that_disagrees_with_the_model_is_a_clear_error(
    tf_models: Path, tmp_path: Path, case: str
) -> None:
    text, expected = MISMATCHES[case]
    model_dir = place(tf_models, "seed", _repo(tmp_path), "bad", text)
    with pytest.raises(ConfigError) as info:
        accelserve.load(model_dir)
    assert expected in str(info.value)


def test_a_matching_partial_config_is_completed(tf_models: Path, tmp_path: Path) -> None:
    text = (
        'platform: "tensorflow_savedmodel"\nmax_batch_size: 16\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [-1] }]\n'
        + params(jit_compile="true", intra_op_thread_count="0")
    )
    model = accelserve.load(place(tf_models, "seed", _repo(tmp_path), "partial", text))
    try:
        assert model.config.max_batch_size == 16
        assert [(t.name, list(t.dims)) for t in model.config.output] == [("y", [2])]
        np.testing.assert_allclose(model.infer({"x": X[:3]})["y"], X[:3] @ SEED_W, rtol=1e-5)
    finally:
        model.close()


def test_a_non_batching_config_keeps_the_full_shape(tf_models: Path, tmp_path: Path) -> None:
    text = 'input [{ name: "x" data_type: TYPE_FP32 dims: [-1, 2] }]\n'
    model = accelserve.load(place(tf_models, "seed", _repo(tmp_path), "whole", text))
    try:
        assert model.config.max_batch_size == 0
        assert [list(t.dims) for t in model.config.output] == [[-1, 2]]
        np.testing.assert_allclose(model.infer({"x": X})["y"], X @ SEED_W, rtol=1e-5)
    finally:
        model.close()


def test_an_output_of_unknown_rank_takes_the_declared_dims(tf_models: Path, tmp_path: Path) -> None:
    root = _repo(tmp_path)
    with pytest.raises(ConfigError) as info:
        accelserve.load(place(tf_models, "reshape", root, "undeclared"))
    assert "model 'undeclared' version 1: the SavedModel does not say the rank of tensor 'y'" in (
        str(info.value)
    )
    text = 'output [{ name: "y" data_type: TYPE_FP32 dims: [-1, -1] }]\n'
    model = accelserve.load(place(tf_models, "reshape", root, "declared", text))
    try:
        assert model.config.max_batch_size == 0
        assert [list(t.dims) for t in model.config.input] == [[-1], [-1]]
        values = np.arange(6, dtype=np.float32)
        y = model.infer({"values": values, "shape": np.array([2, 3], np.int32)})["y"]
        np.testing.assert_array_equal(y, values.reshape(2, 3))
    finally:
        model.close()


def test_missing_savedmodel_directory(tmp_path: Path) -> None:
    model_dir = _repo(tmp_path) / "empty"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text('platform: "tensorflow_savedmodel"\n')
    with pytest.raises(ConfigError, match=r"expected the SavedModel directory 'model\.savedmodel'"):
        accelserve.load(model_dir)


def test_a_gpu_tensorflow_cannot_see_is_a_device_error(tf_models: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    visible = len(tf.config.list_physical_devices("GPU"))
    version = place(tf_models, "seed", _repo(tmp_path), "g") / "1"
    with pytest.raises(DeviceError) as info:
        load_backend(version, config(name="g"), Device("cuda", visible))
    assert f"/device:GPU:{visible} is not visible to TensorFlow" in str(info.value)
    with pytest.raises(ConfigError, match="runs on cpu or cuda:N"):
        load_backend(version, config(name="g"), ABSENT_TPU)


def test_memory_bytes_counts_the_variables(tf_models: Path, tmp_path: Path) -> None:
    version = place(tf_models, "seed", _repo(tmp_path), "mem") / "1"
    backend = load_backend(version, config(name="mem"), Device("cpu", 0))
    assert backend.memory_bytes() == SEED_W.nbytes + 2 * 4
    backend.unload()
    assert backend.memory_bytes() is None
