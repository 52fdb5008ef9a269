"""``torch.nn.Module`` -> ``model.pt2`` (``torch.export``, platform ``accelserve_torch_export``)
or ``model.onnx`` (the TorchScript-based ONNX exporter, ``dynamo=False``: the dynamo exporter
needs onnxscript). Imports torch.

With ``max_batch_size > 0`` the first dimension of every input is dynamic (``Dim("batch")`` for
``torch.export``, a ``batch`` axis for ONNX). Examples of batch 1 are traced at batch 2 (they
are repeated), since ``torch.export`` specialises a dimension it sees as 1. The module's mode is
left as it is: a module in training mode exports its training behaviour (dropout...), which
the check then reports.
"""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from accelserve.tools.export.check import ExportError
from accelserve.tools.export.request import (
    Artifact,
    ExportRequest,
    flat_outputs,
    grow_batch,
    output_names_of,
    specs_of,
)

ONNX_OPSET = 17


def export_pt2(model: torch.nn.Module, request: ExportRequest, version_dir: Path) -> Artifact:
    call = _Caller(model, request)
    request = call.request
    args, kwargs = call.pack(_traced_examples(request))
    dynamic: Any = None
    if request.batching:
        batch = torch.export.Dim("batch", min=1)
        if request.examples.keyword:
            dynamic = {name: {0: batch} for name in request.examples.names}
        else:
            dynamic = tuple({0: batch} for _ in args)
    try:
        program = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic)
    except Exception as exc:
        raise ExportError(
            f"torch.export failed: {type(exc).__name__}: {_first_line(exc)}"
        ) from None
    torch.export.save(program, str(version_dir / "model.pt2"))
    return call.artifact("accelserve_torch_export", "output__")


def export_onnx(model: torch.nn.Module, request: ExportRequest, version_dir: Path) -> Artifact:
    call = _Caller(model, request)
    request = call.request
    args, kwargs = call.pack(_traced_examples(request))
    input_names, output_names = call.input_names, call.output_names("output__")
    axes = {name: {0: "batch"} for name in [*input_names, *output_names]}
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        try:
            torch.onnx.export(
                model,
                args,
                str(version_dir / "model.onnx"),
                kwargs=kwargs or None,
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=axes if request.batching else None,
                opset_version=int(request.options.get("opset") or ONNX_OPSET),
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:
            raise ExportError(
                f"torch.onnx.export failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from None
    # The tracer's own warnings say why an export may be wrong; the check quotes them.
    traced = sorted(
        {_first_line(str(w.message)) for w in caught if "Tracer" in w.category.__name__}
    )
    hint = f"the ONNX tracer warned: {' | '.join(traced)}" if traced else ""
    return call.artifact("onnxruntime_onnx", "output__", hint=hint)


class _Caller:
    """Calls the module the way the examples say (positionally or by name) on NumPy inputs."""

    def __init__(self, model: torch.nn.Module, request: ExportRequest) -> None:
        self.model = model
        request = _in_forward_order(model, request)
        self.request = request
        parameter = next(iter(model.parameters()), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")
        self.input_names = request.names_for_inputs(
            _forward_names(model, len(request.examples.arrays))
        )
        self._sample = self.run(list(request.examples.arrays))

    def pack(self, arrays: list[np.ndarray]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        tensors = [torch.from_numpy(np.array(a)).to(self.device) for a in arrays]
        if self.request.examples.keyword:
            return (), dict(zip(self.request.examples.names, tensors, strict=True))
        return tuple(tensors), {}

    def run(self, arrays: list[np.ndarray]) -> Any:
        args, kwargs = self.pack(arrays)
        with torch.no_grad():
            return self.model(*args, **kwargs)

    def output_names(self, prefix: str) -> list[str]:
        return self.request.names_for_outputs(output_names_of(self._sample, prefix))

    def artifact(self, platform: str, prefix: str, hint: str = "") -> Artifact:
        names = self.output_names(prefix)

        def reference(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            arrays = [inputs[n] for n in self.input_names]
            return dict(zip(names, _numpy_outputs(self.run(arrays)), strict=True))

        batching = self.request.batching
        inputs = dict(zip(self.input_names, self.request.examples.arrays, strict=True))
        outputs = dict(zip(names, _numpy_outputs(self._sample), strict=True))
        if self.model.training:
            hint = "; ".join(
                filter(None, [hint, "the module is in training mode (call model.eval() first)"])
            )
        return Artifact(
            platform,
            specs_of(inputs, batching, "input"),
            specs_of(outputs, batching, "output"),
            reference,
            hint,
        )


def _traced_examples(request: ExportRequest) -> list[np.ndarray]:
    arrays = list(request.examples.arrays)
    if request.batching and request.examples.batch == 1 and request.max_batch_size > 1:
        return grow_batch(arrays, 2)
    return arrays


def _in_forward_order(model: torch.nn.Module, request: ExportRequest) -> ExportRequest:
    """Keyword examples in ``forward``'s order: the exporters order the graph's inputs so."""
    examples = request.examples
    if not examples.keyword:
        return request
    order = _forward_names(model, len(examples.names), all_names=True)
    if not set(examples.names) <= set(order):
        return request
    pairs = sorted(
        zip(examples.names, examples.arrays, strict=True), key=lambda p: order.index(p[0])
    )
    names, arrays = zip(*pairs, strict=True)
    return replace(request, examples=replace(examples, names=names, arrays=arrays))


def _forward_names(model: torch.nn.Module, count: int, all_names: bool = False) -> list[str]:
    try:
        parameters = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        parameters = []
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if all_names:
        return named
    return named[:count] if len(named) >= count else [f"input__{i}" for i in range(count)]


def _numpy_outputs(result: Any) -> list[np.ndarray]:
    arrays = []
    for value in flat_outputs(result):
        if not isinstance(value, torch.Tensor):
            raise ExportError(
                f"the module must return tensors (or a tuple, list or dict of tensors); it "
                f"returned {type(value).__name__}"
            )
        arrays.append(value.detach().cpu().numpy())
    return arrays


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return re.sub(r"(/[\w.\-]+)+", "<path>", text)[:300]
