"""The PyTorch candidates, for models of the torch backend (``.pt2`` ExportedProgram or
TorchScript): each is a model file plus the config it needs (``Spec.config``, written as the
version's ``config_overlay.pbtxt``), checked and measured through the torch backend itself.

- ``compile``: ``torch.compile`` (inductor; the backend's ``torch_compile`` parameter), ``.pt2``.
- ``bf16-autocast``: BF16 autocast (``autocast: bf16``; outputs cast back to their types).
- ``compile-bf16``: both.
- ``int8-weight``: weight-only INT8 of every ``aten.linear`` weight, symmetric per output
  channel (one FP32 scale per row), dequantized in the graph; ``.pt2``. torch 2.13 has no
  weight-only INT8 without torchao, and ``torch.ao.quantization.quantize_dynamic`` works on
  ``nn.Linear`` modules, which neither an ExportedProgram nor a TorchScript file has, so the
  program's own graph is rewritten and exported again. Its gain is memory; its speed on CPU
  depends on inductor fusing the dequantization (``int8-weight-compile``).

torch is imported in the functions (``accelserve optimize`` on an ONNX model never loads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelserve.tools.optimize.candidates import Built, Samples, Spec

TORCH_PLATFORMS = ("accelserve_torch_export", "pytorch_libtorch", "pytorch")


def parameters(**values: str) -> str:
    """A config overlay setting the backend's ``parameters``."""
    return "".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in values.items()
    )


def same_file(source: Path, dest: Path, calibration: Samples, exclude: Sequence[str]) -> None:
    """A candidate that changes only the config serves the original file (or directory)."""
    dest.symlink_to(source.resolve())


def int8_weight(source: Path, dest: Path, calibration: Samples, exclude: Sequence[str]) -> None:
    import torch

    program = torch.export.load(str(source))
    module = program.module()
    quantized = _quantize_linear_weights(module)
    if not quantized:
        raise ValueError("int8-weight: the program has no aten.linear with a stored weight")
    args, kwargs, shapes = _example_inputs(program)
    exported = torch.export.export(module, args, kwargs, dynamic_shapes=shapes)
    torch.export.save(exported, str(dest))


def _quantize_linear_weights(module: Any) -> int:
    """Replace each stored ``aten.linear`` weight by INT8 values and per-row scales, and
    dequantize them in the graph; returns how many weights were quantized."""
    import torch

    aten = torch.ops.aten
    graph = module.graph
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target is not aten.linear.default:
            continue
        weight_node = node.args[1]
        if weight_node.op != "get_attr":
            continue
        weight = module.get_parameter(weight_node.target).detach()
        if weight.dim() != 2 or not weight.is_floating_point():
            continue
        tiny = torch.finfo(torch.float32).tiny
        scale = (weight.float().abs().amax(dim=1, keepdim=True) / 127).clamp(min=tiny)
        values = torch.clamp(torch.round(weight.float() / scale), -127, 127).to(torch.int8)
        base = weight_node.target.replace(".", "_")
        module.register_buffer(f"{base}_int8", values)
        module.register_buffer(f"{base}_scale", scale.to(weight.dtype))
        with graph.inserting_before(node):
            stored = graph.get_attr(f"{base}_int8")
            widened = graph.call_function(aten._to_copy.default, (stored,), {"dtype": weight.dtype})
            scaled = graph.call_function(
                aten.mul.Tensor, (widened, graph.get_attr(f"{base}_scale"))
            )
        node.replace_input_with(weight_node, scaled)
        count += 1
    graph.eliminate_dead_code()
    used = {n.target for n in graph.nodes if n.op == "get_attr"}
    for name, _ in list(module.named_parameters()):
        if name not in used:  # the FP32 weights the INT8 ones replaced
            owner, _, attr = name.rpartition(".")
            delattr(module.get_submodule(owner) if owner else module, attr)
    module.recompile()
    return count


def _example_inputs(program: Any) -> tuple[tuple[Any, ...], dict[str, Any], Any]:
    """Inputs to export the rewritten module again (zeros at the shapes the program was traced
    with) and its dynamic dimensions with their original ranges."""
    import torch
    from torch.export import Dim
    from torch.utils import _pytree

    nodes = {n.name: n for n in program.graph.nodes}
    values = [nodes[n].meta["val"] for n in program.graph_signature.user_inputs]
    dims: dict[str, Any] = {}

    def dynamic(value: Any) -> dict[int, Any] | None:
        found = {}
        for i, size in enumerate(value.shape):
            if isinstance(size, int):
                continue
            name = str(size.node.expr)
            if name not in dims:
                bounds = program.range_constraints.get(size.node.expr)
                low = int(bounds.lower) if bounds is not None else 1
                try:
                    high = int(bounds.upper) if bounds is not None else None
                except (TypeError, OverflowError, AttributeError):  # unbounded (int_oo)
                    high = None
                dims[name] = Dim(name, min=max(low, 1), max=high)
            found[i] = dims[name]
        return found or None

    def example(value: Any) -> Any:
        shape = [s if isinstance(s, int) else max(2, s.node.hint or 2) for s in value.shape]
        return torch.zeros(shape, dtype=value.dtype)

    if program.call_spec.in_spec is None:
        raise ValueError("int8-weight: the program declares no input structure")
    args, kwargs = _pytree.tree_unflatten([example(v) for v in values], program.call_spec.in_spec)
    shape_args, shape_kwargs = _pytree.tree_unflatten(
        [dynamic(v) for v in values], program.call_spec.in_spec
    )
    if shape_kwargs:
        raise ValueError("int8-weight: programs with keyword inputs are not supported")
    return tuple(args), dict(kwargs), tuple(shape_args)


_COMPILE = parameters(torch_compile="true")
_BF16 = parameters(autocast="bf16")
TORCH_SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("compile", "torch.compile (inductor)", same_file, config=_COMPILE),
        Spec("bf16-autocast", "BF16 autocast, outputs in their types", same_file, config=_BF16),
        Spec(
            "compile-bf16",
            "torch.compile (inductor) under BF16 autocast",
            same_file,
            config=parameters(torch_compile="true", autocast="bf16"),
        ),
        Spec("int8-weight", "weight-only INT8 Linear weights, per output channel", int8_weight),
        Spec(
            "int8-weight-compile",
            "weight-only INT8 Linear weights, torch.compile (inductor)",
            int8_weight,
            config=_COMPILE,
        ),
    )
}
_EXPORT_ONLY = ("compile", "compile-bf16", "int8-weight", "int8-weight-compile")


def torch_kinds(text: str, source: Path) -> list[Spec]:
    """``compile,bf16-autocast`` -> their specs; empty: all that apply to the file's format
    (TorchScript: autocast only, since compiling and the graph rewrite need a ``.pt2``)."""
    script = source.suffix != ".pt2"
    if not text.strip():
        return [s for s in TORCH_SPECS.values() if not (script and s.name in _EXPORT_ONLY)]
    specs = []
    for item in (t.strip() for t in text.split(",")):
        if item not in TORCH_SPECS:
            raise ValueError(
                f"--candidates: expected names among {', '.join(TORCH_SPECS)} for a PyTorch "
                f"model; received {item!r}"
            )
        if script and item in _EXPORT_ONLY:
            raise ValueError(
                f"--candidates: {item!r} needs a torch.export program (model.pt2); "
                f"'{source.name}' is TorchScript (bf16-autocast applies)"
            )
        specs.append(TORCH_SPECS[item])
    return specs


def build_torch(
    spec: Spec, source: Path, workdir: Path, calibration: Samples, exclude: Sequence[str] = ()
) -> Built:
    """Build one candidate into its own folder, under the source's file name (PyTorch and
    TensorFlow candidates alike)."""
    folder = workdir / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / source.name
    spec.build(source, dest, calibration, exclude)
    return Built(spec, dest)
