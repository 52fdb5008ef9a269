"""The optimization loop: build each candidate, check it against the original on held-out data,
measure it through the scheduler, search for precise layers where a quantization fails, choose
the fastest accurate one and write it as a new version (``accelserve.optimize``)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from accelserve.errors import ConfigError
from accelserve.tools.optimize import apply as apply_mod
from accelserve.tools.optimize.accuracy import Accuracy, evaluate, parse_tolerances, tightened
from accelserve.tools.optimize.candidates import Built, NotApplicable
from accelserve.tools.optimize.data import (
    Pipeline,
    Sample,
    Split,
    file_samples,
    random_samples,
    text_samples,
)
from accelserve.tools.optimize.data import split as split_samples
from accelserve.tools.optimize.families import Family, family_of
from accelserve.tools.optimize.report import Row, verdicts

ONNX_PLATFORMS = ("onnxruntime_onnx",)
ONNX_BACKENDS = ("onnxruntime", "onnx")


@dataclass
class Result:
    model: str
    original: Row
    rows: list[Row]
    chosen: Row | None
    data: str  # where the validation data came from
    version: int | None = None  # the version written
    served: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_backend(model_dir: Path, config: Any, device: Any = None) -> Family:
    """The served version's model file and its candidates' family; ConfigError for a backend
    optimize does not support."""
    from accelserve.config import is_ensemble, select_versions
    from accelserve.repository import platform_of
    from accelserve.tools.optimize.tf_candidates import TF_PLATFORMS
    from accelserve.tools.optimize.torch_candidates import TORCH_PLATFORMS

    if is_ensemble(config):
        raise ConfigError(
            f"model '{config.name}' is an ensemble: optimize one of its steps' models instead"
        )
    version = select_versions(model_dir, config)[-1]
    kind = platform_of(config, model_dir / version)
    if kind in ONNX_PLATFORMS + ONNX_BACKENDS:
        filename = config.default_model_filename or "model.onnx"
    elif kind in TORCH_PLATFORMS:
        filename = config.default_model_filename or (
            "model.pt2" if kind == "accelserve_torch_export" else "model.pt"
        )
    elif kind in TF_PLATFORMS:
        filename = config.default_model_filename or "model.savedmodel"
    else:
        raise ConfigError(
            f"model '{config.name}': backend/platform {kind!r} is not supported by optimize; "
            f"supported: ONNX models (platform 'onnxruntime_onnx', backend 'onnxruntime'), "
            f"PyTorch ones (platforms {', '.join(repr(p) for p in TORCH_PLATFORMS)}) and "
            f"TensorFlow SavedModels ('tensorflow_savedmodel')"
        )
    path = model_dir / version / filename
    if not path.exists():
        raise ConfigError(f"model '{config.name}' version {version}: no model file '{filename}'")
    return family_of(model_dir, kind, path, device)


def _load_data(
    model_dir: Path,
    info: Any,
    config: Any,
    text_file: str | None,
    input_data: str | None,
    shapes: Mapping[str, Sequence[int]],
    max_samples: int,
) -> tuple[Split, Pipeline | None]:
    if text_file and input_data:
        raise ValueError("--text-file and --input-data: expected one of them; received both")
    if text_file:
        pipeline = Pipeline(model_dir.parent, config.name)
        try:
            samples = text_samples(Path(text_file), pipeline, max_samples)
        except BaseException:
            pipeline.close()
            raise
        return split_samples(samples, f"text {text_file} via ensemble {pipeline.name!r}"), pipeline
    if input_data:
        samples = file_samples(Path(input_data), info, shapes, max_samples)
        return split_samples(samples, f"data file {input_data}"), None
    samples = random_samples(info, config, shapes, min(max_samples, 64), 1)
    return split_samples(samples, "random data within the config's ranges"), None


def optimize(
    model: str | Path,
    *,
    text_file: str | None = None,
    input_data: str | None = None,
    candidates: str = "",
    tolerances: Sequence[str] = (),
    shapes: Mapping[str, Sequence[int]] | None = None,
    max_samples: int = 256,
    duration_s: float = 3.0,
    warmup_s: float = 1.0,
    batch_size: int = 0,
    instances: int = 0,
    search: bool = True,
    repeats: int = 2,
    search_reserve: float = 0.25,
    min_gain: float = 1.05,
    write: bool = True,
    apply: bool = False,
    stream: TextIO | None = None,
    device: str = "cpu",
) -> Result:
    """Optimize the ONNX, PyTorch or TensorFlow model directory ``model`` (``REPO/NAME``) for
    ``device`` (``cuda:N`` adds the GPU candidates); see the module docstring of
    ``accelserve.tools.optimize``. Raises ConfigError/ValueError on bad arguments."""
    from accelserve.devices import parse_device
    from accelserve.tools.advisor.advise import inspect_model
    from accelserve.tools.bench.runner import Progress as SpeedProgress
    from accelserve.tools.optimize.measure import configured, request_rows, speed
    from accelserve.tools.optimize.search import keep_sensitive
    from accelserve.tools.progress import Progress

    model_dir = Path(model)
    if not model_dir.is_dir():
        raise ConfigError(f"model directory '{model_dir}': expected a directory; it does not exist")
    if not duration_s > 0 or warmup_s < 0:
        raise ValueError(
            f"--duration must be > 0 and --warmup >= 0; received {duration_s:g}, {warmup_s:g}"
        )
    if repeats < 1:
        raise ValueError(f"--repeats: expected >= 1; received {repeats}")
    if max_samples < 2:
        raise ValueError(f"--max-samples: expected >= 2; received {max_samples}")
    bounds = parse_tolerances(tolerances)
    search_bounds = tightened(bounds, search_reserve)
    from accelserve.config import read_config

    target_device = parse_device(device)  # GPU candidates only on cuda:N
    family = check_backend(model_dir, read_config(model_dir), target_device)
    source = family.source
    specs = family.kinds(candidates)
    progress = Progress(stream, "optimize")
    with progress.step(f"inspect {model_dir}") as step:
        target = inspect_model(model_dir, target_device)
        step.note(f"file {source}")
    setting = configured(target.config, target_device, batch_size, instances)
    with progress.step("prepare validation data") as step:
        data, pipeline = _load_data(
            model_dir,
            target.info,
            target.config,
            text_file,
            input_data,
            dict(shapes or {}),
            max_samples,
        )
        step.note(
            f"{data.source}: {len(data.calibration)} calibration, {len(data.held_out)} held out"
        )
    calibration = [s.inputs for s in data.calibration]
    speed_inputs = request_rows([s.inputs for s in data.held_out], target.info.batches)
    quiet = SpeedProgress(None)

    def judged(runner: Any, sample: Sample) -> dict[str, np.ndarray]:
        outputs = runner(sample.inputs)
        return pipeline.finish(sample, outputs) if pipeline is not None else outputs

    with progress.step("original: reference outputs on the held-out data"):
        reference_runner = family.runner(source)
        reference = [judged(reference_runner, s) for s in data.held_out]
        del reference_runner

    def judge(path: Path, overlay: str = "") -> Accuracy:
        runner = family.runner(path, overlay)
        return evaluate(lambda k: judged(runner, data.held_out[k]), reference)

    def measured(label: str, path: Path, overlay: str = "") -> Any:
        with progress.step(f"{label}: speed, {setting.label}") as step:
            m = speed(model_dir, path, setting, speed_inputs, duration_s, warmup_s, quiet, overlay)
            step.note(m.error or f"{m.rows_per_s:,.0f} rows/s, p99 {m.p99_ms:.2f} ms")
        return m

    original = Row("original", f"version {source.parent.name} as served", _mb(source))
    original.measurement = measured("original", source)
    if not original.measurement.ok:
        raise ValueError(
            f"model {target.config.name!r} as configured cannot be measured: "
            f"{original.measurement.error or 'every request failed'}"
        )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="accelserve-optimize-") as tmp:
        work = Path(tmp)
        built_of: dict[str, Built] = {}
        for spec in specs:
            row = Row(spec.name, spec.description)
            rows.append(row)
            try:
                with progress.step(f"{spec.name}: build and check accuracy") as step:
                    built = family.build(spec, work, calibration)
                    built_of[spec.name] = built
                    row.size_mb = _mb(built.path)
                    row.accuracy = judge(built.path, spec.config)
                    row.failures = row.accuracy.failures(bounds)
                    step.note(row.accuracy.summary())
            except NotApplicable as exc:  # e.g. nothing to fuse: not a candidate for this model
                rows.remove(row)
                progress.message(f"{spec.name}: skipped: {exc}")
                continue
            except Exception as exc:  # a converter that cannot handle this graph: reported
                row.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                continue
            row.measurement = measured(spec.name, built.path, spec.config)
        if search:
            best_ok = max((r.rows_per_s for r in rows if r.passes), default=original.rows_per_s)
            to_search = sorted(
                (
                    r
                    for r in rows
                    if r.failures
                    and r.rows_per_s > best_ok
                    and r.label in built_of
                    and built_of[r.label].spec.quantizes
                ),
                key=lambda r: -r.rows_per_s,
            )[:2]
            for failed in to_search:
                spec = built_of[failed.label].spec
                with progress.step(f"{spec.name}: keep the sensitive layers precise") as step:
                    found = keep_sensitive(
                        spec, source, work, calibration, judge, search_bounds, progress.message
                    )
                    step.note(
                        f"{found.kept_groups} of {found.groups} groups kept precise after "
                        f"{found.steps} trials: {found.accuracy.summary()}"
                        if found
                        else "no passing mix"
                    )
                if found is None:
                    continue
                row = Row(
                    found.built.label,
                    f"{spec.description}; {len(found.built.excluded)} sensitive node(s) kept FP32",
                    _mb(found.built.path),
                    found.accuracy,
                )
                built_of[row.label] = found.built
                row.measurement = measured(row.label, found.built.path)
                rows.append(row)
        # On a busy machine one run may be unlucky: more rounds, interleaved, give medians.
        for round_ in range(2, repeats + 1):
            for row, path in [
                (original, source),
                *((r, built_of[r.label].path) for r in rows if r.measurement is not None),
            ]:
                overlay = built_of[row.label].spec.config if row.label in built_of else ""
                row.repeats.append(measured(f"{row.label} (round {round_})", path, overlay))
        chosen = verdicts(rows, original, min_gain)
        counts = f"{len(data.held_out)} held out, {len(data.calibration)} to calibrate"
        result = Result(target.config.name, original, rows, chosen, f"{data.source} ({counts})")
        if chosen is not None and write:
            built = built_of[chosen.label]
            record = {
                "candidate": chosen.label,
                "description": chosen.description,
                "from_version": int(source.parent.name),
                "nodes_kept_fp32": built.excluded,
                "rows_per_s": round(chosen.rows_per_s, 1),
                "original_rows_per_s": round(original.rows_per_s, 1),
                "accuracy": chosen.accuracy.summary() if chosen.accuracy else "",
                "data": data.source,
            }
            if built.spec.config:
                record["config_overlay"] = built.spec.config
            result.version = apply_mod.write_version(
                model_dir, built.path, source.name, record, built.spec.config
            )
            apply_mod.serve_version(model_dir, result.version if apply else int(source.parent.name))
    if pipeline is not None:
        pipeline.close()
    result.served = apply_mod.served_versions(model_dir)
    return result


def _mb(path: Path) -> float:
    path = path.resolve()
    if path.is_dir():  # a SavedModel
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
    return path.stat().st_size / 1e6
