"""Request validation: a request's inputs and requested outputs checked against a model's
config, and inputs reshaped as the config's ``reshape`` says, before any backend sees them.

Shared by the data plane, the ensemble platform (for each step) and in-process models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from accelserve.errors import InvalidArgumentError
from accelserve.types import InferRequest, TensorSpec, v2_datatype

if TYPE_CHECKING:
    from accelserve.model import ModelVersion


def prepare_inputs(model: ModelVersion, request: InferRequest) -> None:
    """Check a request against the model's config and reshape inputs for the backend.

    Raises ``InvalidArgumentError`` naming the model, the input and the expected and received
    values."""
    inputs = request.inputs
    specs = model.inputs
    for name in inputs:
        if name not in specs:
            raise InvalidArgumentError(
                f"model '{model.name}': unexpected input '{name}'; the model's inputs are "
                f"{', '.join(specs)}"
            )
    max_batch = model.config.max_batch_size
    batch = -1
    for spec in specs.values():
        array = inputs.get(spec.name)
        if array is None:
            if spec.optional:
                continue
            raise InvalidArgumentError(
                f"model '{model.name}': input '{spec.name}' is missing; expected inputs "
                f"{', '.join(s.name for s in specs.values() if not s.optional)}"
            )
        datatype = v2_datatype(array.dtype)
        if datatype != spec.datatype:
            raise InvalidArgumentError(
                f"model '{model.name}' input '{spec.name}' datatype: expected {spec.datatype}; "
                f"received {datatype}"
            )
        shape = array.shape
        if max_batch > 0:
            if len(shape) != len(spec.dims) + 1 or not _fits(shape[1:], spec.dims):
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}' shape: expected "
                    f"{[-1, *spec.dims]}; received {list(shape)}"
                )
            rows = shape[0]
            if rows < 1 or rows > max_batch:
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}': batch size {rows} is outside "
                    f"1..{max_batch} (max_batch_size)"
                )
            if batch not in (-1, rows):
                raise InvalidArgumentError(
                    f"model '{model.name}' input '{spec.name}': batch size {rows} differs from "
                    f"the other inputs' batch size {batch}"
                )
            batch = rows
        elif not _fits(shape, spec.dims):
            raise InvalidArgumentError(
                f"model '{model.name}' input '{spec.name}' shape: expected {list(spec.dims)}; "
                f"received {list(shape)}"
            )
        if spec.reshape is not None:
            inputs[spec.name] = _reshape(array, spec, max_batch > 0)
    for name in request.outputs:
        if name not in model.outputs:
            raise InvalidArgumentError(
                f"model '{model.name}': unknown output '{name}' requested; the model's outputs "
                f"are {', '.join(model.outputs)}"
            )


def _fits(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    if shape == dims:
        return True
    if len(shape) != len(dims):
        return False
    return all(d == -1 or d == s for s, d in zip(shape, dims, strict=True))


def _reshape(array: np.ndarray, spec: TensorSpec, batched: bool) -> np.ndarray:
    assert spec.reshape is not None
    target = (array.shape[0], *spec.reshape) if batched else spec.reshape
    return array.reshape(target)
