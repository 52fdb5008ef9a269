"""accelserve.export on TensorFlow: tf.Module (the seed's linear model), a Keras model with two
inputs and a string model, to SavedModels with a ``serving_default`` signature.

The SavedModels are checked with TensorFlow itself (``tf.saved_model.load``) and round-trip
through ``accelserve.load`` with the ``tensorflow_savedmodel`` backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# Through the exporter, which imports TensorFlow after Triton (see tf_export.py): TensorFlow
# first would make the torch tests that follow in this process abort.
tf_export = pytest.importorskip("accelserve.tools.export.tf_export")
tf = tf_export.tf
keras = pytest.importorskip("keras")

import accelserve  # noqa: E402
from accelserve.tools.export.arguments import examples_of  # noqa: E402
from accelserve.tools.export.check import ExportMismatchError  # noqa: E402
from accelserve.tools.export.request import ExportRequest  # noqa: E402

W = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
X = np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)


class Linear(tf.Module):
    """The seed's model: y = x @ W + b, W 2x2, b zeros."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable(W)
        self.b = tf.Variable(tf.zeros([2]))

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        return tf.matmul(x, self.w) + self.b


class Greeter(tf.Module):
    def __call__(self, name: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"greeting": tf.strings.join(["hello ", name]), "length": tf.strings.length(name)}


class Counting(tf.Module):
    """Python state: the traced signature keeps the count it saw when it was traced."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        self.calls += 1
        return x * float(self.calls)


def two_inputs() -> keras.Model:
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    out = keras.layers.Dense(2, kernel_initializer="ones")(keras.layers.Concatenate()([a, b]))
    return keras.Model([a, b], out)


def _save(model: object, examples: object, tmp_path: Path, max_batch_size: int) -> Path:
    found = examples_of(examples, required=True)
    assert found is not None
    version_dir = tmp_path / "1"
    version_dir.mkdir()
    tf_export.export_savedmodel(model, ExportRequest(found, max_batch_size), version_dir)
    return version_dir / "model.savedmodel"


def test_linear_savedmodel_has_a_batching_serving_default(tmp_path: Path) -> None:
    loaded = tf.saved_model.load(str(_save(Linear(), X[:1], tmp_path, 8)))
    signature = loaded.signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert (spec.name, spec.shape.as_list(), spec.dtype) == ("x", [None, 2], tf.float32)
    got = signature(x=tf.constant(X))["output_0"].numpy()
    np.testing.assert_allclose(got, X @ W, rtol=1e-6)


def test_keras_two_inputs_keep_the_models_input_names(tmp_path: Path) -> None:
    a, b = np.ones((1, 3), np.float32), np.full((1, 2), 2.0, np.float32)
    loaded = tf.saved_model.load(str(_save(two_inputs(), (a, b), tmp_path, 4)))
    signature = loaded.signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == ["a", "b"]
    got = signature(a=tf.ones((2, 3)), b=tf.fill((2, 2), 2.0))["output_0"].numpy()
    np.testing.assert_allclose(got, np.full((2, 2), 7.0), rtol=1e-6)


def test_string_model_unbatched_takes_tf_strings(tmp_path: Path) -> None:
    names = np.array([b"ada", b"alan"], dtype=object)
    loaded = tf.saved_model.load(str(_save(Greeter(), {"name": names}, tmp_path, 0)))
    signature = loaded.signatures["serving_default"]
    (spec,) = signature.structured_input_signature[1].values()
    assert (spec.shape.as_list(), spec.dtype) == ([2], tf.string)
    result = signature(name=tf.constant(names))
    assert list(result["greeting"].numpy()) == [b"hello ada", b"hello alan"]
    assert list(result["length"].numpy()) == [3, 4]


def test_round_trip_through_accelserve(tmp_path: Path) -> None:
    result = accelserve.export(
        Linear(),
        tmp_path / "repo" / "seed",
        example_inputs=X[:2],
        max_batch_size=8,
        progress=False,
    )
    assert result.platform == "tensorflow_savedmodel"
    with accelserve.load(str(tmp_path / "repo/seed")) as model:
        np.testing.assert_allclose(model.infer({"x": X})["output_0"], X @ W, rtol=1e-6)


def test_keras_and_string_models_round_trip(tmp_path: Path) -> None:
    a, b = np.ones((1, 3), np.float32), np.ones((1, 2), np.float32)
    keras_result = accelserve.export(
        two_inputs(),
        tmp_path / "r" / "k",
        example_inputs=(a, b),
        max_batch_size=4,
        progress=False,
    )
    assert [i.name for i in keras_result.config.input] == ["a", "b"]
    names = np.array([[b"ada"], [b"alan"]], dtype=object)
    accelserve.export(
        Greeter(),
        tmp_path / "r" / "s",
        example_inputs={"name": names},
        max_batch_size=4,
        progress=False,
    )
    with accelserve.load(str(tmp_path / "r/k")) as model:
        got = model.infer({"a": np.ones((3, 3), np.float32), "b": np.zeros((3, 2), np.float32)})
    np.testing.assert_allclose(got["output_0"], np.full((3, 2), 3.0), rtol=1e-6)
    with accelserve.load(str(tmp_path / "r/s")) as model:
        out = model.infer({"name": np.array([[b"grace"]], dtype=object)})
    assert out["greeting"].tolist() == [[b"hello grace"]] and out["length"].tolist() == [[5]]


def test_cli_savedmodel_copies_the_directory_and_reads_its_signature(tmp_path: Path) -> None:
    from accelserve.cli import main

    saved = _save(Linear(), X[:1], tmp_path, 8)
    assert main(["export", "savedmodel", str(saved), str(tmp_path / "r" / "seed")]) == 0
    assert (tmp_path / "r/seed/1/model.savedmodel/saved_model.pb").is_file()
    with accelserve.load(str(tmp_path / "r/seed")) as model:
        assert model.config.platform == "tensorflow_savedmodel"
        assert model.config.max_batch_size > 0  # the signature's leading None
        np.testing.assert_allclose(model.infer({"x": X})["output_0"], X @ W, rtol=1e-6)


def test_python_state_frozen_in_the_signature_is_a_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ExportMismatchError, match=r"model 'count' output 'output_0'"):
        accelserve.export(Counting(), tmp_path / "r" / "count", example_inputs=X, progress=False)
    assert not (tmp_path / "r").exists()
