"""SavedModels the TensorFlow tests build (once per session, through the ``tf_models`` fixture).

- ``seed``: the seed's linear model ``y = x @ W + b`` (W 2x2 random, b zeros), a ``tf.Module``
  whose ``serving_default`` takes ``x`` [None, 2] FP32.
- ``keras_two``: a Keras 3 functional model with two inputs ``a`` [None, 3] and ``b`` [None, 2]
  (concatenated, then a dense layer), written by ``model.export``.
- ``strings``: ``serving_default`` upper-cases ``text`` [None] and returns each string's
  ``length``; a second signature ``parse`` turns ``text`` into ``number`` (FP32), which
  TensorFlow refuses with InvalidArgumentError for a string that is not a number.
- ``half``: ``a`` FP16 and ``b`` BF16, both [None, 2], doubled into ``a2`` and ``b2``.
- ``reshape``: ``values`` [None] FP32 reshaped to ``shape`` [None] INT32: an output ``y`` whose
  rank the signature cannot tell.

Each lives at ``<store>/<name>/1/model.savedmodel`` with no config.pbtxt; ``place`` copies one
into a repository under any name with the config a test wants.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

SEED_W = np.random.default_rng(7).standard_normal((2, 2)).astype(np.float32)
SEED_B = np.zeros(2, np.float32)


def build_all(store: Path) -> Path:
    import tensorflow as tf

    _save(tf, store / "seed", _seed_module(tf))
    _save(tf, store / "strings", _strings_module(tf))
    _save(tf, store / "half", _half_module(tf))
    _save(tf, store / "reshape", _reshape_module(tf))
    _keras_two(store / "keras_two")
    return store


def place(store: Path, model: str, repository: Path, name: str, config: str = "") -> Path:
    """Copy ``model`` from the store into ``repository/name`` (version 1), with ``config`` as
    its config.pbtxt when given."""
    target = repository / name
    shutil.copytree(store / model / "1", target / "1")
    if config:
        (target / "config.pbtxt").write_text(config)
    return target


def tf_reference(
    store: Path, model: str, inputs: dict[str, np.ndarray], signature: str = "serving_default"
) -> dict[str, np.ndarray]:
    """What TensorFlow itself computes with the model's SavedModel."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(store / model / "1" / "model.savedmodel"))
    results = loaded.signatures[signature](**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in results.items()}


def _save(tf: Any, model_dir: Path, module: Any) -> None:
    signatures = {name: getattr(module, name) for name in module.signature_names}
    tf.saved_model.save(module, str(model_dir / "1" / "model.savedmodel"), signatures=signatures)


def _seed_module(tf: Any) -> Any:
    class Linear(tf.Module):  # type: ignore[misc]
        signature_names = ("serving_default",)

        def __init__(self) -> None:
            super().__init__()
            self.W = tf.Variable(SEED_W)
            self.b = tf.Variable(SEED_B)

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
        def serving_default(self, x: Any) -> dict[str, Any]:
            return {"y": tf.matmul(x, self.W) + self.b}

    return Linear()


def _strings_module(tf: Any) -> Any:
    text = tf.TensorSpec([None], tf.string, name="text")

    class Strings(tf.Module):  # type: ignore[misc]
        signature_names = ("serving_default", "parse")

        @tf.function(input_signature=[text])
        def serving_default(self, text: Any) -> dict[str, Any]:
            return {"upper": tf.strings.upper(text), "length": tf.strings.length(text)}

        @tf.function(input_signature=[text])
        def parse(self, text: Any) -> dict[str, Any]:
            return {"number": tf.strings.to_number(text, tf.float32)}

    return Strings()


def _half_module(tf: Any) -> Any:
    class Half(tf.Module):  # type: ignore[misc]
        signature_names = ("serving_default",)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float16, name="a"),
                tf.TensorSpec([None, 2], tf.bfloat16, name="b"),
            ]
        )
        def serving_default(self, a: Any, b: Any) -> dict[str, Any]:
            return {"a2": a * tf.constant(2, tf.float16), "b2": b * tf.constant(2, tf.bfloat16)}

    return Half()


def _reshape_module(tf: Any) -> Any:
    class Reshape(tf.Module):  # type: ignore[misc]
        signature_names = ("serving_default",)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="values"),
                tf.TensorSpec([None], tf.int32, name="shape"),
            ]
        )
        def serving_default(self, values: Any, shape: Any) -> dict[str, Any]:
            return {"y": tf.reshape(values, shape)}

    return Reshape()


def _keras_two(model_dir: Path) -> None:
    import keras

    keras.utils.set_random_seed(3)
    a = keras.Input((3,), name="a")
    b = keras.Input((2,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], keras.layers.Dense(2, activation="tanh")(joined))
    model.export(str(model_dir / "1" / "model.savedmodel"), verbose=False)
