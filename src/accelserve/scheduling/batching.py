"""Pure batch arithmetic: which requests may share a batch, merging them, splitting the result.

No asyncio and no state here, so each rule is tested on plain arrays.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from accelserve.errors import ModelExecutionError

#: one request's (or one batch's) tensors by name
Tensors = dict[str, np.ndarray]


def batch_signature(inputs: Mapping[str, np.ndarray]) -> Hashable:
    """A key equal for two requests exactly when they may be concatenated along axis 0.

    Every input's name, dtype and non-batch shape must match (names sorted, so the order in
    which a client listed its inputs does not matter).
    """
    return tuple(sorted([(name, a.dtype, a.shape[1:]) for name, a in inputs.items()]))


def request_rows(inputs: Mapping[str, np.ndarray]) -> int:
    """Rows a request contributes to a batch: the first dimension of its inputs."""
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1


def merge_inputs(requests: Sequence[Mapping[str, np.ndarray]]) -> Tensors:
    """Concatenate the requests' inputs along axis 0 (a lone request is returned uncopied)."""
    if len(requests) == 1:
        only = requests[0]
        return only if isinstance(only, dict) else dict(only)
    first = requests[0]
    return {name: np.concatenate([r[name] for r in requests], axis=0) for name in first}


def split_outputs(outputs: Mapping[str, np.ndarray], rows: Sequence[int]) -> list[Tensors]:
    """Cut a batch's outputs back into one dict per request, ``rows[i]`` rows each (views).

    Raises ``ModelExecutionError`` when an output's first dimension is not the batch size.
    """
    if not isinstance(outputs, Mapping):
        raise ModelExecutionError(
            f"the backend returned {type(outputs).__name__}; expected a dict of arrays"
        )
    total = sum(rows)
    for name, array in outputs.items():
        got = array.shape[0] if isinstance(array, np.ndarray) and array.ndim else None
        if got != total:
            shape = getattr(array, "shape", type(array).__name__)
            raise ModelExecutionError(
                f"output '{name}' has shape {shape}; expected a first dimension of {total} "
                "(the batch size) to split it between requests"
            )
    if len(rows) == 1:
        return [dict(outputs)]
    parts: list[Tensors] = []
    start = 0
    for n in rows:
        stop = start + n
        parts.append({name: array[start:stop] for name, array in outputs.items()})
        start = stop
    return parts
