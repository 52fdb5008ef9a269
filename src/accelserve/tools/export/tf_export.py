"""A TensorFlow ``tf.Module``, Keras model or ``tf.function`` -> ``model.savedmodel/``, platform
``tensorflow_savedmodel`` (Triton's layout). Imports tensorflow.

The SavedModel has one signature, ``serving_default``, whose inputs are named by the config and
whose outputs are a dict (so each has a name): the model's own dict keys, else ``output_0``,
``output_1``... (TensorFlow's names for unnamed outputs). With ``max_batch_size > 0`` every
input spec has a leading ``None``. A Keras model with several inputs is called with a list (a
dict when the examples are a dict); anything else with the inputs as arguments.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.backends.tensorflow import import_tensorflow
from accelserve.tools.export.check import ExportError
from accelserve.tools.export.request import (
    Artifact,
    ExportRequest,
    flat_outputs,
    output_names_of,
    specs_of,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
# The backend's importer: Triton before TensorFlow (their LLVMs clash the other way round).
tf = import_tensorflow()

PLATFORM = "tensorflow_savedmodel"
SIGNATURE = "serving_default"


def export_savedmodel(model: Any, request: ExportRequest, version_dir: Path) -> Artifact:
    examples = request.examples
    input_names = request.names_for_inputs(_default_input_names(model, len(examples.arrays)))
    call = _caller(model, request)
    sample = _run(call, [tf.constant(a) for a in examples.arrays])
    output_names = request.names_for_outputs(output_names_of(sample, "output_"))
    signature = [
        tf.TensorSpec(
            [None, *a.shape[1:]] if request.batching else list(a.shape),
            tf.string if a.dtype == object else tf.as_dtype(a.dtype),
            name=name,
        )
        for name, a in zip(input_names, examples.arrays, strict=True)
    ]

    @tf.function(input_signature=signature)
    def serve(*inputs: Any) -> dict[str, Any]:  # tf.Tensor
        return dict(zip(output_names, flat_outputs(call(*inputs)), strict=True))

    holder = tf.Module()
    holder.model = model  # tracks the model's variables
    holder.serve = serve
    try:
        concrete = serve.get_concrete_function()
        tf.saved_model.save(
            holder, str(version_dir / "model.savedmodel"), signatures={SIGNATURE: concrete}
        )
    except Exception as exc:
        raise ExportError(
            f"tf.saved_model.save failed: {type(exc).__name__}: {_line(exc)}"
        ) from None

    def reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = _run(call, [tf.constant(inputs[n]) for n in input_names])
        return dict(zip(output_names, map(_numpy, flat_outputs(result)), strict=True))

    outputs = dict(zip(output_names, map(_numpy, flat_outputs(sample)), strict=True))
    return Artifact(
        PLATFORM,
        specs_of(dict(zip(input_names, examples.arrays, strict=True)), request.batching, "input"),
        specs_of(outputs, request.batching, "output"),
        reference,
    )


def _caller(model: Any, request: ExportRequest) -> Callable[..., Any]:
    names = request.examples.names
    keras_model = _is_keras(model)
    if request.examples.keyword:
        if keras_model:
            return lambda *xs: model(dict(zip(names, xs, strict=True)))
        return lambda *xs: model(**dict(zip(names, xs, strict=True)))
    if keras_model and len(request.examples.arrays) > 1:
        return lambda *xs: model(list(xs))
    return lambda *xs: model(*xs)


def _run(call: Callable[..., Any], tensors: list[Any]) -> Any:
    try:
        return call(*tensors)
    except Exception as exc:
        raise ExportError(f"calling the model failed: {type(exc).__name__}: {_line(exc)}") from None


def _is_keras(model: Any) -> bool:
    return any(c.__module__.startswith(("keras", "tf_keras")) for c in type(model).__mro__)


def _default_input_names(model: Any, count: int) -> list[str]:
    if _is_keras(model):
        names = [str(getattr(i, "name", "")) for i in getattr(model, "inputs", None) or []]
        # Keras names an unnamed Input "keras_tensor_<n>": no better than a position.
        if len(names) == count and all(n and not n.startswith("keras_tensor") for n in names):
            return names
        return [f"input_{i}" for i in range(count)]
    target = getattr(model, "python_function", model)  # a tf.function's own function
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return named[:count] if len(named) >= count else [f"input_{i}" for i in range(count)]


def _numpy(value: Any) -> np.ndarray:
    array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
    return array.astype(object) if array.dtype.kind == "S" else array


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return re.sub(r"(/[\w.\-]+)+", "<path>", text)[:300]
