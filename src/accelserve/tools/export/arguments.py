"""``accelserve.export``'s arguments checked, each error naming the argument, what it expects
and what it received. The model's framework is recognised without importing any framework:
a model of a framework means that framework is already imported (``sys.modules``)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.errors import InvalidArgumentError
from accelserve.tools.export.files import FILE_FORMATS, format_of_path, is_onnx_proto
from accelserve.tools.export.request import Examples

# framework -> the formats it exports to (the first is the default)
FRAMEWORK_FORMATS: dict[str, tuple[str, ...]] = {
    "torch": ("pt2", "onnx"),
    "tensorflow": ("savedmodel",),
    "jax": ("jax",),
    "file": tuple(FILE_FORMATS),
}
FORMATS = ("pt2", "onnx", "savedmodel", "jax")
_DESCRIPTION = {
    "torch": "a torch.nn.Module",
    "tensorflow": "a TensorFlow module or Keras model",
    "jax": "a JAX function",
    "file": "a model file",
}


def parse_target(target: Any) -> tuple[Path, str]:
    """``REPO/NAME`` -> (repository, model name)."""
    if not isinstance(target, str | Path) or not str(target).strip():
        raise InvalidArgumentError(
            f"target: expected 'REPO/NAME' (a model repository and a model name); received "
            f"{target!r}"
        )
    path = Path(target)
    name = path.name
    if len(path.parts) < 2 or name in ("", ".", "..") or name.startswith("."):
        raise InvalidArgumentError(
            f"target: expected 'REPO/NAME' (a model repository and a model name); received "
            f"{str(target)!r}"
        )
    if path.exists() and not path.is_dir():
        raise InvalidArgumentError(f"target: '{path}' exists and is not a model directory")
    return path.parent, name


def framework_and_format(model: Any, fmt: str | None) -> tuple[str, str]:
    if fmt is not None and fmt not in FORMATS:
        raise InvalidArgumentError(
            f"format: expected one of {', '.join(FORMATS)} (or None for the model's default); "
            f"received {fmt!r}"
        )
    framework = _framework(model)
    if framework == "file":
        shown = format_of_path(Path(model)) if isinstance(model, str | Path) else "onnx"
        if fmt is None and shown is None:
            raise InvalidArgumentError(
                f"format: '{model}' is neither a .onnx or .pt2 file nor a SavedModel directory; "
                f"expected one of {', '.join(FILE_FORMATS)}; received None"
            )
        fmt = fmt or shown
    allowed = FRAMEWORK_FORMATS[framework]
    fmt = fmt or allowed[0]
    if fmt not in allowed:
        raise InvalidArgumentError(
            f"format: {_DESCRIPTION[framework]} exports to {' or '.join(allowed)}; received {fmt!r}"
        )
    if framework == "file" and is_onnx_proto(model) and fmt != "onnx":
        raise InvalidArgumentError(f"format: an onnx.ModelProto exports to onnx; received {fmt!r}")
    return framework, fmt


def _framework(model: Any) -> str:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(model, (tf.Module, tf.types.experimental.PolymorphicFunction)):
        return "tensorflow"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.Model):
        return "tensorflow"
    if is_onnx_proto(model) or isinstance(model, str | Path):
        return "file"
    if callable(model) and "jax" in sys.modules:
        return "jax"
    raise InvalidArgumentError(
        "model: expected a torch.nn.Module, a TensorFlow module or Keras model, a JAX function "
        "(with params=), an onnx.ModelProto or a model file path; received "
        f"{type(model).__module__}.{type(model).__qualname__}"
    )


def examples_of(value: Any, required: bool) -> Examples | None:
    """``example_inputs``: one array, a sequence of arrays, or a dict of them by input name."""
    expected = "an array, a tuple or list of arrays, or a dict of arrays by input name"
    if value is None:
        if required:
            raise InvalidArgumentError(f"example_inputs: expected {expected}; received None")
        return None
    if isinstance(value, Mapping):
        names = list(value)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise InvalidArgumentError(
                f"example_inputs: expected a dict with input names (non-empty strings) as keys; "
                f"received keys {names!r}"
            )
        arrays = [_array(value[n], f"example_inputs[{n!r}]") for n in names]
        return Examples(tuple(names), tuple(arrays), keyword=True)
    if isinstance(value, list | tuple):
        if not value:
            raise InvalidArgumentError(f"example_inputs: expected {expected}; received empty")
        arrays = [_array(v, f"example_inputs[{i}]") for i, v in enumerate(value)]
        return Examples(("",) * len(arrays), tuple(arrays))
    return Examples(("",), (_array(value, "example_inputs", expected),))


def _array(
    value: Any, where: str, expected: str = "an array (NumPy, torch, TensorFlow or JAX)"
) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    elif hasattr(value, "detach"):  # torch
        array = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and hasattr(value, "dtype"):  # TensorFlow eager tensors
        array = np.asarray(value.numpy())
    elif hasattr(value, "__array__") and hasattr(value, "dtype"):  # JAX arrays
        array = np.asarray(value)
    else:
        raise InvalidArgumentError(f"{where}: expected {expected}; received {type(value).__name__}")
    if array.dtype.kind in "SU":
        array = (
            array.astype(object)
            if array.dtype.kind == "S"
            else np.char.encode(array).astype(object)
        )
    return array


def check_batch(examples: Examples | None, max_batch_size: Any) -> int:
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
        raise InvalidArgumentError(
            f"max_batch_size: expected an integer >= 0; received {max_batch_size!r}"
        )
    if max_batch_size < 0:
        raise InvalidArgumentError(f"max_batch_size: expected >= 0; received {max_batch_size}")
    if max_batch_size == 0 or examples is None:
        return max_batch_size
    rows = {int(a.shape[0]) if a.ndim else -1 for a in examples.arrays}
    if -1 in rows or len(rows) != 1:
        shapes = [list(a.shape) for a in examples.arrays]
        raise InvalidArgumentError(
            "example_inputs: with max_batch_size > 0 every example needs the same first (batch) "
            f"dimension; received shapes {shapes}"
        )
    (batch,) = rows
    if not 1 <= batch <= max_batch_size:
        raise InvalidArgumentError(
            f"example_inputs: expected a batch of 1 to max_batch_size ({max_batch_size}) rows; "
            f"received {batch}"
        )
    return max_batch_size


def names_of(value: Any, argument: str, count: int | None) -> tuple[str, ...]:
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, Sequence) or not all(isinstance(n, str) and n for n in names):
        raise InvalidArgumentError(
            f"{argument}: expected a list of non-empty strings; received {value!r}"
        )
    if len(set(names)) != len(names):
        raise InvalidArgumentError(f"{argument}: expected distinct names; received {list(names)}")
    if count is not None and len(names) != count:
        raise InvalidArgumentError(
            f"{argument}: expected {count} names (one per example input); received {list(names)}"
        )
    return tuple(names)


def tolerance(value: Any, argument: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidArgumentError(f"{argument}: expected a number >= 0; received {value!r}")
    return float(value)


def choose_version(model_dir: Path, version: Any) -> int:
    """``version``, or the next free version number of the model."""
    taken = (
        {int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()}
        if model_dir.is_dir()
        else set()
    )
    if version is None:
        return max(taken, default=0) + 1
    if (
        isinstance(version, bool)
        or not isinstance(version, int | str)
        or not str(version).isdigit()
        or int(version) < 1
    ):
        raise InvalidArgumentError(f"version: expected an integer >= 1; received {version!r}")
    if int(version) in taken:
        raise InvalidArgumentError(
            f"version: model '{model_dir.name}' already has version {int(version)}; expected a "
            f"free version (next free: {max(taken) + 1})"
        )
    return int(version)
