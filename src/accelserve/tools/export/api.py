"""``accelserve.export(model, "REPO/NAME", example_inputs=...)``: a model of any framework, or a
model file, -> a version of a model in a Triton-layout repository, checked.

The steps: the framework's exporter (one leaf module each, imported only for its models)
writes the model file into a staging directory; the ``config.pbtxt`` follows from the
exporter's specs (or, for a file, from the backend that reads it); ``accelserve.load`` loads
the staged model and runs the examples (and a larger batch when it batches) against the
original; only then does the version move into the repository. A failed export leaves the
repository as it was.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from accelserve.api import LocalModel
from accelserve.errors import InvalidArgumentError
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.tools.export import arguments
from accelserve.tools.export.check import ExportError, compare, random_inputs
from accelserve.tools.export.files import FILE_FORMATS, copy_model, format_of_path, is_onnx_proto
from accelserve.tools.export.model_config import (
    base_config,
    build_config,
    config_from_file,
    render,
)
from accelserve.tools.export.request import (
    Artifact,
    Examples,
    ExportRequest,
    grow_batch,
)
from accelserve.tools.progress import Progress

# (framework, format) -> "module:function" writing the model file (imported when used)
EXPORTERS: dict[tuple[str, str], str] = {
    ("torch", "pt2"): "accelserve.tools.export.torch_export:export_pt2",
    ("torch", "onnx"): "accelserve.tools.export.torch_export:export_onnx",
    ("tensorflow", "savedmodel"): "accelserve.tools.export.tf_export:export_savedmodel",
    ("jax", "jax"): "accelserve.tools.export.jax_export:export_jax",
}
_HOW = {"pt2": "torch.export", "onnx": "ONNX", "savedmodel": "SavedModel", "jax": "jax.export"}
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4


@dataclass(frozen=True)
class ExportResult:
    model_dir: Path
    version: int
    platform: str
    config: ModelConfig
    max_difference: float | None  # largest |exported - original| checked; None: no original


def export(
    model: Any,
    target: str | Path,
    *,
    example_inputs: Any = None,
    max_batch_size: int = 0,
    format: str | None = None,
    version: int | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    params: Any = None,
    platforms: list[str] | None = None,
    opset: int | None = None,
    reference: Callable[[dict[str, np.ndarray]], Any] | None = None,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    device: str = "cpu",
    progress: bool | TextIO = True,
) -> ExportResult:
    """Export ``model`` into ``target`` (``REPO/NAME``) as its next version and check it.

    ``model``: a ``torch.nn.Module`` (``format`` "pt2", the default, or "onnx"), a TensorFlow
    ``tf.Module``, Keras model or ``tf.function`` ("savedmodel"), a JAX function ("jax"; called
    ``fn(params, *inputs)`` when ``params`` is given), or an ``onnx.ModelProto`` or a model file
    path (.onnx, .pt2, SavedModel directory: copied as it is). ``example_inputs``: one array,
    a sequence, or a dict by input name (then passed by keyword); required except for files.
    ``max_batch_size`` > 0 makes the first dimension the batch (dynamic, with dynamic
    batching). ``reference(inputs_by_name)`` replaces the original model in the check. Raises
    ``InvalidArgumentError`` for bad arguments, ``ExportError`` when the framework fails and
    ``ExportMismatchError`` (naming the output and the largest difference) when the exported
    model disagrees with the original beyond ``atol + rtol * |original|``.
    """
    repository, name = arguments.parse_target(target)
    framework, fmt = arguments.framework_and_format(model, format)
    examples = arguments.examples_of(example_inputs, required=framework != "file")
    batch_limit = arguments.check_batch(examples, max_batch_size)
    if input_names is not None and examples is not None and examples.keyword:
        raise InvalidArgumentError(
            "input_names: the keys of the example_inputs dict already name the inputs; "
            f"expected None; received {input_names!r}"
        )
    count = len(examples.arrays) if examples is not None and framework != "file" else None
    in_names = arguments.names_of(input_names, "input_names", count)
    out_names = arguments.names_of(output_names, "output_names", None)
    if framework == "file" and (in_names or out_names):
        raise InvalidArgumentError(
            "input_names/output_names: a model file keeps the names it declares; expected None"
        )
    if params is not None and framework != "jax":
        raise InvalidArgumentError(
            f"params: expected None for {framework} models (params go with a JAX function); "
            f"received {type(params).__name__}"
        )
    for argument, value, wanted in (("platforms", platforms, "jax"), ("opset", opset, "onnx")):
        if value is not None and fmt != wanted:
            raise InvalidArgumentError(
                f"{argument}: applies to format {wanted!r}; this export's format is {fmt!r}"
            )
    if reference is not None and not callable(reference):
        raise InvalidArgumentError(
            f"reference: expected a function of the inputs by name; received "
            f"{type(reference).__name__}"
        )
    options: dict[str, Any] = {"platforms": platforms, "opset": opset}
    if params is not None:
        options["params"] = params
    request = ExportRequest(examples or Examples((), ()), batch_limit, in_names, out_names, options)
    job = _Job(
        repository,
        name,
        arguments.choose_version(repository / name, version),
        arguments.tolerance(atol, "atol"),
        arguments.tolerance(rtol, "rtol"),
        device,
        Progress(_stream(progress)),
    )
    if framework == "file":
        shown = "an onnx.ModelProto" if is_onnx_proto(model) else str(model)
        return job.run(
            lambda vd: copy_model(model, fmt, vd),
            f"{shown} ({fmt})",
            request,
            examples,
            reference,
            batch_limit,
        )
    target_fn = _exporter(framework, fmt)
    what = f"{type(model).__name__} to {FILE_NAMES[fmt]} ({_HOW[fmt]})"
    return job.run(
        lambda vd: target_fn(model, request, vd), what, request, examples, reference, batch_limit
    )


FILE_NAMES = {**{f: n for f, (n, _) in FILE_FORMATS.items()}, "jax": "model.jax"}


def export_file(
    path: str | Path,
    target: str | Path,
    *,
    format: str | None = None,
    max_batch_size: int | None = None,
    version: int | None = None,
    device: str = "cpu",
    progress: bool | TextIO = True,
) -> ExportResult:
    """A model file (.onnx, .pt2, SavedModel directory) into ``target`` as its next version;
    the config comes from what the file declares (``max_batch_size`` None: batching when every
    tensor's first dimension is dynamic); the model is loaded and run once on random data."""
    repository, name = arguments.parse_target(target)
    source = Path(path)
    if not source.exists():
        raise InvalidArgumentError(f"path: expected a model file; '{source}' does not exist")
    shown = format_of_path(source)
    if format is None and shown is None:
        raise InvalidArgumentError(
            f"format: expected one of {', '.join(FILE_FORMATS)}; '{source}' shows none"
        )
    fmt = format or shown
    if fmt not in FILE_FORMATS:
        raise InvalidArgumentError(
            f"format: expected one of {', '.join(FILE_FORMATS)}; received {fmt!r}"
        )
    if shown is not None and shown != fmt:
        raise InvalidArgumentError(
            f"path: expected a model file of format {fmt!r}; received '{source}' (a {shown} file)"
        )
    if max_batch_size is not None:
        arguments.check_batch(None, max_batch_size)
    job = _Job(
        repository,
        name,
        arguments.choose_version(repository / name, version),
        DEFAULT_ATOL,
        DEFAULT_RTOL,
        device,
        Progress(_stream(progress)),
    )
    request = ExportRequest(Examples((), ()))
    return job.run(
        lambda vd: copy_model(source, str(fmt), vd),
        f"{source} ({fmt})",
        request,
        None,
        None,
        max_batch_size,
    )


@dataclass(frozen=True)
class _Job:
    repository: Path
    name: str
    version: int
    atol: float
    rtol: float
    device: str
    progress: Progress

    def run(
        self,
        write: Callable[[Path], Artifact],
        what: str,
        request: ExportRequest,
        examples: Examples | None,
        reference: Callable[[dict[str, np.ndarray]], Any] | None,
        max_batch_size: int | None,
    ) -> ExportResult:
        model_dir = self.repository / self.name
        base = base_config(model_dir)  # an existing config that forbids the export fails now
        with tempfile.TemporaryDirectory(prefix="accelserve-export-") as tmp:
            staged = Path(tmp) / self.name
            version_dir = staged / str(self.version)
            version_dir.mkdir(parents=True)
            with self.progress.step(f"exporting {what}") as step:
                artifact = write(version_dir)
                step.note(_size(version_dir))
            if artifact.inputs is None or artifact.outputs is None:
                config = config_from_file(version_dir, base, artifact.platform, max_batch_size)
            else:
                config = build_config(
                    base,
                    artifact.platform,
                    request.max_batch_size,
                    artifact.inputs,
                    artifact.outputs,
                )
            # The staged copy holds one version: a version policy naming others stays out.
            staged_config = ModelConfig()
            staged_config.CopyFrom(config)
            staged_config.ClearField("version_policy")
            (staged / "config.pbtxt").write_text(render(staged_config))
            unwritten = f"Nothing was written to {model_dir}"
            note = f"{artifact.hint}. {unwritten}" if artifact.hint else unwritten
            difference = self._check(staged, artifact, examples, reference, note)
            with self.progress.step(f"writing {model_dir}/{self.version}"):
                model_dir.mkdir(parents=True, exist_ok=True)
                destination = model_dir / str(self.version)
                if destination.exists():
                    raise ExportError(f"{destination} appeared during the export; not replaced")
                shutil.move(str(version_dir), str(destination))
                (model_dir / "config.pbtxt").write_text(render(config))
        self.progress.message(
            f"model '{self.name}' version {self.version} ({config.platform}) is ready; serve "
            f"with: accelserve serve --model-repository {self.repository}"
        )
        return ExportResult(model_dir, self.version, config.platform, config, difference)

    def _check(
        self,
        staged: Path,
        artifact: Artifact,
        examples: Examples | None,
        reference: Callable[[dict[str, np.ndarray]], Any] | None,
        note: str,
    ) -> float | None:
        with self.progress.step(f"loading with accelserve.load on {self.device}"):
            local = LocalModel(staged, device=self.device, version=str(self.version))
        try:
            config = local.config
            # Keyword examples go by their own names; positional ones in the config's order.
            names = (
                list(examples.names)
                if examples and examples.keyword
                else [i.name for i in config.input]
            )
            if examples is None:
                with self.progress.step("running once on random inputs within the config"):
                    local.infer(random_inputs(config, batch=1))
                return None
            if len(names) != len(examples.arrays):
                raise InvalidArgumentError(
                    f"example_inputs: model '{self.name}' takes {len(names)} inputs "
                    f"({', '.join(names)}); received {len(examples.arrays)}"
                )
            batches = [list(examples.arrays)]
            limit = config.max_batch_size
            if limit > 0 and min(limit, 2 * examples.batch) > examples.batch:
                batches.append(grow_batch(examples.arrays, min(limit, 2 * examples.batch)))
            worst: float | None = None
            for arrays in batches:
                rows = f"a batch of {arrays[0].shape[0]}" if limit > 0 else "the examples"
                with self.progress.step(f"comparing with the original on {rows}") as step:
                    inputs = dict(zip(names, arrays, strict=True))
                    got = local.infer(inputs)
                    outputs = [o.name for o in config.output]
                    want = _expected(reference, artifact, inputs, outputs)
                    if want is None:
                        step.note("ran; no original to compare with")
                        continue
                    difference = compare(got, want, self.atol, self.rtol, self.name, note)
                    worst = max(worst or 0.0, difference)
                    step.note(f"largest difference {difference:.3g}")
            return worst
        finally:
            local.close()


def _expected(
    reference: Callable[[dict[str, np.ndarray]], Any] | None,
    artifact: Artifact,
    inputs: dict[str, np.ndarray],
    output_names: list[str],
) -> dict[str, np.ndarray] | None:
    if reference is None:
        return artifact.reference(inputs) if artifact.reference is not None else None
    result = reference(dict(inputs))
    if isinstance(result, Mapping):
        return {str(k): np.asarray(v) for k, v in result.items()}
    values = list(result) if isinstance(result, list | tuple) else [result]
    if len(values) != len(output_names):
        raise InvalidArgumentError(
            f"reference: expected {len(output_names)} outputs ({', '.join(output_names)}); "
            f"it returned {len(values)}"
        )
    return {n: np.asarray(v) for n, v in zip(output_names, values, strict=True)}


def _exporter(framework: str, fmt: str) -> Callable[[Any, ExportRequest, Path], Artifact]:
    module_name, function = EXPORTERS[(framework, fmt)].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExportError(f"exporting to {fmt} needs {exc.name}, which is not installed") from exc
    exporter: Callable[[Any, ExportRequest, Path], Artifact] = getattr(module, function)
    return exporter


def _stream(progress: bool | TextIO) -> TextIO | None:
    if progress is True:
        return sys.stderr
    return progress or None


def _size(path: Path) -> str:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return f"{total / 1e6:.1f} MB" if total >= 1e5 else f"{total / 1e3:.1f} kB"
