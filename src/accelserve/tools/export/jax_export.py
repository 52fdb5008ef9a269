"""A JAX function (with its parameters) -> ``model.jax``: ``jax.export`` bytes, platform ``jax``
(what ``backends/jax.py`` serves). Imports jax.

The function is called ``fn(params, *inputs)`` when ``params`` is given (the parameters become
constants of the program), else ``fn(*inputs)``; with a dict of examples the inputs go by
keyword. With ``max_batch_size > 0`` every input's first dimension is the one symbolic
dimension ``b``. The program is lowered for ``platforms`` (default cpu, cuda and tpu, so one
file serves on any device); lowering needs no such device here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax import export as jax_export

from accelserve.errors import InvalidArgumentError
from accelserve.tools.export.check import ExportError
from accelserve.tools.export.request import Artifact, ExportRequest, specs_of

PLATFORMS = ("cpu", "cuda", "tpu")
_NO_PARAMS = object()


def export_jax(fn: Callable[..., Any], request: ExportRequest, version_dir: Path) -> Artifact:
    examples = request.examples
    for i, array in enumerate(examples.arrays):
        canonical = np.dtype(jax.dtypes.canonicalize_dtype(array.dtype))
        if canonical != array.dtype:
            raise InvalidArgumentError(
                f"example_inputs[{i}]: JAX computes it as {canonical} (JAX_ENABLE_X64 is off); "
                f"expected {canonical} examples; received {array.dtype}"
            )
    params = request.options.get("params", _NO_PARAMS)
    names = examples.names

    def call(*inputs: Any) -> Any:
        head = () if params is _NO_PARAMS else (params,)
        if examples.keyword:
            return fn(*head, **dict(zip(names, inputs, strict=True)))
        return fn(*head, *inputs)

    try:
        sample = call(*examples.arrays)
    except Exception as exc:
        raise ExportError(
            f"calling the function failed: {type(exc).__name__}: {_line(exc)}"
        ) from None
    output_names = request.names_for_outputs(_leaf_names(sample))
    scope = jax_export.SymbolicScope()
    (batch,) = jax_export.symbolic_shape("b", scope=scope) if request.batching else (None,)
    specs = [
        jax.ShapeDtypeStruct((batch, *a.shape[1:]) if request.batching else a.shape, a.dtype)
        for a in examples.arrays
    ]
    platforms = tuple(request.options.get("platforms") or PLATFORMS)
    try:
        exported = jax_export.export(jax.jit(call), platforms=platforms)(*specs)
    except Exception as exc:
        raise ExportError(f"jax.export failed: {type(exc).__name__}: {_line(exc)}") from None
    (version_dir / "model.jax").write_bytes(bytes(exported.serialize()))

    input_names = request.names_for_inputs([f"in{i}" for i in range(len(examples.arrays))])

    def reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_leaves(call(*(inputs[n] for n in input_names)))
        return {n: np.asarray(v) for n, v in zip(output_names, leaves, strict=True)}

    outputs = dict(
        zip(output_names, map(np.asarray, jax.tree_util.tree_leaves(sample)), strict=True)
    )
    return Artifact(
        "jax",
        specs_of(dict(zip(input_names, examples.arrays, strict=True)), request.batching, "input"),
        specs_of(outputs, request.batching, "output"),
        reference,
    )


def _leaf_names(result: Any) -> list[str]:
    """A flat dict's keys (in JAX's leaf order), else ``out0``, ``out1``... (the backend's)."""
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(result)[0]]
    keys = [p[0].key for p in paths if len(p) == 1 and isinstance(p[0], jax.tree_util.DictKey)]
    if len(keys) == len(paths) and all(isinstance(k, str) for k in keys):
        return [str(k) for k in keys]
    return [f"out{i}" for i in range(len(paths))]


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return re.sub(r"(/[\w.\-]+)+", "<path>", text)[:300]
