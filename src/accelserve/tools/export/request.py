"""What every framework exporter receives and returns (no framework imports here).

``ExportRequest`` is ``accelserve.export``'s arguments once checked: the example inputs as
named NumPy arrays, the batch limit, the names to give the tensors and the framework options.
An exporter writes its model file into a version directory and returns an ``Artifact``: the
platform that serves it, the config's tensor specs, and a ``reference`` that runs the original
model on NumPy inputs by name, for the check after loading.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from accelserve.errors import InvalidArgumentError
from accelserve.types import TensorSpec, v2_datatype

# Runs the original model: inputs by config name -> outputs by config name.
Reference = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Examples:
    """The example inputs in call order; ``keyword``: the model takes them by name."""

    names: tuple[str, ...]  # the caller's dict keys, else empty names ("") to be chosen
    arrays: tuple[np.ndarray, ...]
    keyword: bool = False

    @property
    def batch(self) -> int:
        return int(self.arrays[0].shape[0])


@dataclass(frozen=True)
class ExportRequest:
    examples: Examples
    max_batch_size: int = 0
    input_names: tuple[str, ...] = ()  # empty: the framework's or the example dict's names
    output_names: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)  # framework-specific options

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def names_for_inputs(self, defaults: Sequence[str]) -> list[str]:
        """``input_names``, else the example dict's keys, else the framework's ``defaults``."""
        if self.input_names:
            return list(self.input_names)
        if self.examples.keyword:
            return list(self.examples.names)
        return list(defaults)

    def names_for_outputs(self, defaults: Sequence[str]) -> list[str]:
        if not self.output_names:
            return list(defaults)
        if len(self.output_names) != len(defaults):
            raise InvalidArgumentError(
                f"output_names: expected {len(defaults)} names (the model returns "
                f"{len(defaults)} outputs); received {list(self.output_names)}"
            )
        return list(self.output_names)


@dataclass(frozen=True)
class Artifact:
    platform: str
    inputs: list[TensorSpec] | None = None  # None: read them from the model file
    outputs: list[TensorSpec] | None = None
    reference: Reference | None = None  # None: nothing to compare against (a file)
    hint: str = ""  # what may explain a mismatch (tracer warnings, training mode)


def specs_of(named: Mapping[str, np.ndarray], batching: bool, kind: str) -> list[TensorSpec]:
    """Config specs for arrays shaped like the examples (the batch dim dropped when batching)."""
    specs = []
    for name, array in named.items():
        try:
            datatype = v2_datatype(array.dtype)
        except KeyError:
            raise InvalidArgumentError(
                f"{kind} '{name}': dtype {array.dtype} has no KServe V2 datatype"
            ) from None
        if batching and array.ndim == 0:
            raise InvalidArgumentError(
                f"{kind} '{name}': expected a batch dimension first (max_batch_size > 0); "
                "received a scalar"
            )
        dims = array.shape[1:] if batching else array.shape
        specs.append(TensorSpec(name, datatype, tuple(int(d) for d in dims)))
    return specs


def grow_batch(arrays: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """The examples repeated (forwards, then backwards) up to ``size`` rows: a larger batch
    whose rows are all plausible inputs for the model."""
    grown = []
    for array in arrays:
        cycle = np.concatenate([array, array[::-1]])
        reps = -(-size // len(cycle))
        grown.append(np.ascontiguousarray(np.concatenate([cycle] * reps)[:size]))
    return grown


def output_names_of(result: Any, prefix: str) -> list[str]:
    """Natural names of a model's outputs: a dict's keys, else ``prefix`` + position."""
    if isinstance(result, Mapping):
        return [str(k) for k in result]
    count = len(result) if isinstance(result, list | tuple) else 1
    return [f"{prefix}{i}" for i in range(count)]


def flat_outputs(result: Any) -> list[Any]:
    if isinstance(result, Mapping):
        return list(result.values())
    return list(result) if isinstance(result, list | tuple) else [result]
