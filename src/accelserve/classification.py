"""Triton's classification extension and output labels.

An output may name a ``label_filename`` in its config: a text file in the model's directory,
one label per line, line i naming class i. A request may ask for an output as its top k classes
(``{"name": "OUT", "parameters": {"classification": k}}``; tritonclient's ``class_count``): the
answer is then a BYTES tensor of "value:index:label" strings (":label" left out when the class
has none), largest value first, per batch item ([batch, k] for a batching model, [k]
otherwise), k clipped to the number of classes. Values print as Triton prints them: floats with
six decimals, integers as they are.

The data plane applies it after inference; a requested output name carries its k as a
``classification`` attribute (``codecs.v2.RequestedOutput`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from accelserve.errors import ConfigError, InvalidArgumentError
from accelserve.protocol.model_config_pb2 import ModelConfig


def read_labels(model_dir: Path, config: ModelConfig) -> dict[str, list[str]]:
    """Each output's labels (from its ``label_filename``), by output name."""
    labels: dict[str, list[str]] = {}
    for output in config.output:
        if not output.label_filename:
            continue
        path = model_dir / output.label_filename
        where = (
            f"model '{config.name}' output '{output.name}' label_filename '{output.label_filename}'"
        )
        if Path(output.label_filename).is_absolute() or ".." in Path(output.label_filename).parts:
            raise ConfigError(f"{where}: expected a file name inside the model's directory")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"{where}: no such file in the model's directory") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot be read as UTF-8 text ({exc})") from None
        labels[output.name] = text.splitlines()
    return labels


def requested_classes(outputs: Sequence[str]) -> dict[str, int]:
    """The outputs asked for as top-k classes, with their k."""
    return {str(o): k for o in outputs if (k := getattr(o, "classification", 0))}


def classify(
    name: str, array: np.ndarray, k: int, labels: Sequence[str], batched: bool
) -> np.ndarray:
    """``array``'s top ``k`` classes per batch item, as "value:index[:label]" bytes."""
    if array.dtype.kind not in "biuf":
        raise InvalidArgumentError(
            f"output '{name}': classification needs a numeric output; it is {array.dtype} "
            f"(expected integers or floats)"
        )
    rows = array.reshape(array.shape[0], -1) if batched and array.ndim else array.reshape(1, -1)
    count = min(k, rows.shape[1])
    result = np.empty((rows.shape[0], count), dtype=object)
    floats = array.dtype.kind == "f"
    for r, row in enumerate(rows):
        order = np.argsort(-row.astype(np.float64), kind="stable")[:count]
        for c, index in enumerate(order.tolist()):
            value = f"{float(row[index]):f}" if floats else str(int(row[index]))
            label = f":{labels[index]}" if index < len(labels) and labels[index] else ""
            result[r, c] = f"{value}:{index}{label}".encode()
    return result if batched and array.ndim else result.reshape(count)
