"""The check after an export: the model as accelserve loads it against the original.

``compare`` raises ``ExportMismatchError`` naming the output, the batch and the largest
difference when an output is missing, has another dtype or shape, or differs beyond
``|got - want| <= atol + rtol * |want|`` (NumPy's ``allclose`` rule). ``random_inputs`` makes
data within a config for files, whose original model is not at hand.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from accelserve.config import input_specs
from accelserve.errors import AccelServeError
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.types import numpy_dtype


class ExportError(AccelServeError):
    """An export failed: the framework refused the model, or the result does not load."""


class ExportMismatchError(ExportError):
    """The exported model's outputs differ from the original model's."""

    def __init__(self, message: str, output: str, batch: int, max_difference: float) -> None:
        super().__init__(message)
        self.output = output
        self.batch = batch
        self.max_difference = max_difference


def compare(
    got: Mapping[str, np.ndarray],
    want: Mapping[str, np.ndarray],
    atol: float,
    rtol: float,
    model: str,
    note: str = "",
) -> float:
    """The largest absolute difference over every output; raises past the tolerance (``note``
    ends the message: what may explain a difference, what was left unwritten)."""
    tail = f". {note[:1].upper()}{note[1:]}" if note else ""
    worst = 0.0
    for name, expected in want.items():
        batch = int(expected.shape[0]) if expected.ndim else 1
        where = f"model '{model}' output '{name}' (batch of {batch})"
        if name not in got:
            raise ExportMismatchError(
                f"{where}: the exported model does not return it; it returns "
                f"{', '.join(sorted(got))}{tail}",
                name,
                batch,
                float("inf"),
            )
        actual = got[name]
        if actual.shape != expected.shape:
            raise ExportMismatchError(
                f"{where}: shape: the original gives {list(expected.shape)}, the exported "
                f"model {list(actual.shape)}{tail}",
                name,
                batch,
                float("inf"),
            )
        if expected.dtype.kind in "fc" or actual.dtype.kind in "fc":
            a, e = actual.astype(np.float64), expected.astype(np.float64)
            nan_mismatch = np.isnan(a) != np.isnan(e)
            diff = np.where(np.isnan(a) & np.isnan(e), 0.0, np.abs(a - e))
            diff = np.where(nan_mismatch, np.inf, diff)
            bound = atol + rtol * np.abs(np.nan_to_num(e))
        else:
            diff = (actual != expected).astype(np.float64)
            bound = np.zeros_like(diff)
        if diff.size == 0:
            continue
        index = np.unravel_index(int(np.argmax(diff - bound)), diff.shape)
        largest = float(diff.max())
        worst = max(worst, largest)
        if diff[index] > bound[index]:
            raise ExportMismatchError(
                f"{where}: the exported model differs from the original by up to {largest:.3g} "
                f"(at index {[int(i) for i in index]}: {_item(actual[index])} vs "
                f"{_item(expected[index])}; allowed atol={atol:g} + rtol={rtol:g} * |original|){tail}",
                name,
                batch,
                largest,
            )
    return worst


def _item(value: np.ndarray) -> str:
    return f"{value.item():.6g}" if np.asarray(value).dtype.kind in "fc" else repr(value.item())


def random_inputs(config: ModelConfig, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One request's worth of data within the config: variable dims of 2, small values (an
    integer input may be an index or a token id, so it stays in {0, 1})."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in input_specs(config):
        shape = tuple(2 if d < 0 else d for d in spec.dims)
        if config.max_batch_size > 0:
            shape = (batch, *shape)
        dtype = numpy_dtype(spec.datatype)
        if spec.datatype == "BYTES":
            array: np.ndarray = np.full(shape, b"accelserve", dtype=object)
        elif spec.datatype == "BOOL":
            array = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.kind in "iu":
            array = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            array = rng.standard_normal(shape).astype(dtype)
        inputs[spec.name] = array
    return inputs
