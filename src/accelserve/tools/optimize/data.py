"""Validation data for ``accelserve optimize``, split into calibration and held-out samples.

Three sources:

- ``--input-data FILE``: the ``accelserve bench --input-data`` JSON (``{"data": [{NAME: values
  | {"content": [...], "shape": [...]}}, ...]}``), one sample per entry;
- ``--text-file FILE``: one text per line, fed through the steps of the ensemble that contains
  the model (for the MiniLM example, the tokenizer makes ``input_ids`` / ``attention_mask``);
  the steps after the model then turn both the original's and a candidate's outputs into the
  ensemble's outputs, and those are what the accuracy is judged on (what a client receives);
- neither: random samples within the config's ranges (token ids below ``vocab_size``, masks of
  ones, other integers small, floats standard normal).

Samples alternate between the two splits, so held-out data is never calibration data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.errors import ConfigError


@dataclass
class Sample:
    inputs: dict[str, np.ndarray]  # the model's inputs, batch dim included
    context: dict[str, np.ndarray] = field(default_factory=dict)  # ensemble tensors (text)


@dataclass
class Split:
    calibration: list[Sample]
    held_out: list[Sample]
    source: str


def split(samples: Sequence[Sample], source: str) -> Split:
    if len(samples) < 2:
        raise ValueError(
            f"validation data ({source}): expected at least 2 samples (one to calibrate, one "
            f"held out); received {len(samples)}"
        )
    return Split(list(samples[0::2]), list(samples[1::2]), source)


# -- an ensemble around the model ----------------------------------------------------------


class Pipeline:
    """The ensemble steps before and after the model, loaded in process (``accelserve.load``)."""

    def __init__(self, repository: Path, model: str, ensemble: str | None = None) -> None:
        from accelserve.config import is_ensemble, read_config
        from accelserve.ensemble import Graph

        found = []
        for folder in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
            try:
                config = read_config(folder)
            except ConfigError:
                continue
            if is_ensemble(config) and (ensemble is None or config.name == ensemble):
                graph = Graph.from_config(config)
                if any(s.model == model for s in graph.steps):
                    found.append((config, graph))
        if not found:
            raise ValueError(
                f"--text-file: no ensemble in {repository} runs model {model!r}; text can only "
                f"reach the model through an ensemble's steps (or give --input-data)"
            )
        config, graph = found[0]
        self.name = config.name
        index = next(k for k, s in enumerate(graph.steps) if s.model == model)
        self.step = graph.steps[index]
        texts = [n for n, s in graph.inputs.items() if s.datatype == "BYTES"]
        if not texts:
            raise ValueError(f"--text-file: ensemble {self.name!r} has no BYTES (text) input")
        self.text_input = texts[0]
        self.batched = config.max_batch_size > 0
        produced_after = {t for s in graph.steps[index + 1 :] for _, t in s.outputs}
        produced_after |= {t for _, t in self.step.outputs}
        self.outputs = [n for n in graph.outputs if n in produced_after]
        self._models: list[Any] = []
        self.before = [(s, self._open(repository, s)) for s in graph.steps[:index]]
        self.after = [(s, self._open(repository, s)) for s in graph.steps[index + 1 :]]

    def _open(self, repository: Path, step: Any) -> Any:
        from accelserve.api import load

        model = load(repository / step.model, "cpu", step.version)
        self._models.append(model)
        return model

    def prepare(self, text: str) -> Sample:
        row = np.array([text.encode()], dtype=object)
        tensors = {self.text_input: row.reshape(1, 1) if self.batched else row}
        for step, model in self.before:
            produced = model.infer({name: tensors[t] for name, t in step.inputs})
            tensors.update({t: produced[name] for name, t in step.outputs if name in produced})
        missing = [t for _, t in self.step.inputs if t not in tensors]
        if missing:
            raise ValueError(
                f"--text-file: ensemble {self.name!r} does not make {missing} from text before "
                f"model {self.step.model!r}"
            )
        return Sample({name: tensors[t] for name, t in self.step.inputs}, tensors)

    def finish(self, sample: Sample, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ensemble's outputs from the model's ``outputs`` on ``sample``."""
        tensors = dict(sample.context)
        tensors.update({t: outputs[name] for name, t in self.step.outputs if name in outputs})
        for step, model in self.after:
            produced = model.infer({name: tensors[t] for name, t in step.inputs})
            tensors.update({t: produced[name] for name, t in step.outputs if name in produced})
        return {name: tensors[name] for name in self.outputs if name in tensors}

    def close(self) -> None:
        for model in self._models:
            model.close()
        self._models = []


def text_samples(path: Path, pipeline: Pipeline, limit: int) -> list[Sample]:
    try:
        lines = [t.strip() for t in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--text-file {path}: cannot read UTF-8 text: {exc}") from None
    texts = [t for t in lines if t][:limit]
    return [pipeline.prepare(t) for t in texts]


# -- a data file and random data -----------------------------------------------------------


def file_samples(
    path: Path, info: Any, shapes: Mapping[str, Sequence[int]], limit: int
) -> list[Sample]:
    """``accelserve bench --input-data`` entries, each one sample of one row."""
    from accelserve.tools.bench.inputs import load_json_data

    full = {}
    for spec in info.inputs:
        if spec.optional and spec.name not in shapes:
            continue
        dims = tuple(shapes.get(spec.name, spec.dims))
        full[spec.name] = (1, *dims) if info.batches else dims
    return [Sample(t) for t in load_json_data(path, info, full)[:limit]]


def random_samples(
    info: Any,
    config: Any,
    shapes: Mapping[str, Sequence[int]],
    count: int,
    rows: int,
    seed: int = 0,
) -> list[Sample]:
    """``count`` samples of ``rows`` rows each; variable dims come from ``--shape`` (else 16)."""
    from accelserve.types import V2_TO_NUMPY

    params = {k: v.string_value for k, v in config.parameters.items()}
    token_ids = set(filter(None, params.get("token_id_inputs", "").split(",")))
    masks = set(filter(None, params.get("sequence_mask", "").split(",")))
    vocab = int(params.get("vocab_size", "0") or 0) or 64
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        tensors = {}
        for spec in info.inputs:
            if spec.optional and spec.name not in shapes:
                continue
            dims = tuple(d if d >= 0 else 16 for d in shapes.get(spec.name, spec.dims))
            shape = (rows, *dims) if info.batches else dims
            dtype = V2_TO_NUMPY[spec.datatype]
            if spec.datatype == "BYTES":
                raise ValueError(
                    f"input {spec.name!r} is text (BYTES): give --text-file or --input-data"
                )
            if spec.name in masks:
                value = np.ones(shape, dtype=dtype)
            elif dtype.kind in "iu":
                high = vocab if spec.name in token_ids else 64
                value = rng.integers(0, high, size=shape).astype(dtype)
            elif dtype.kind == "b":
                value = rng.random(shape) < 0.5
            else:
                value = rng.standard_normal(shape).astype(dtype)
            tensors[spec.name] = value
        out.append(Sample(tensors))
    return out
