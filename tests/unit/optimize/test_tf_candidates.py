"""The TensorFlow candidate of ``accelserve optimize`` (``xla``: the backend's ``jit_compile``)
on the seed's linear SavedModel: it answers as the original through the backend, and chosen it
is written as a version holding a copy of the SavedModel directory and its overlay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import accelserve
from accelserve.config import read_config, version_config
from accelserve.tools.optimize.families import Family
from accelserve.tools.optimize.tf_candidates import TF_SPECS, tf_kinds
from tests.tf_builders import place

CONFIG = (
    'name: "lin"\nplatform: "tensorflow_savedmodel"\nmax_batch_size: 8\ndynamic_batching { }\n'
    "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
)


def test_xla_answers_as_the_original(tf_models: Path, tmp_path: Path) -> None:
    model_dir = place(tf_models, "seed", tmp_path, "lin", CONFIG)
    family = Family("tf", model_dir, model_dir / "1" / "model.savedmodel")
    spec = TF_SPECS["xla"]
    built = family.build(spec, tmp_path / "work", [])
    assert built.path.name == "model.savedmodel" and built.path.is_dir()
    x = {"x": np.random.default_rng(0).standard_normal((3, 2)).astype(np.float32)}
    original = family.runner(family.source)(x)["y"]
    np.testing.assert_allclose(family.runner(built.path, spec.config)(x)["y"], original, rtol=1e-5)
    assert 'key: "jit_compile"' in spec.config


def test_chosen_xla_is_a_version_with_the_savedmodel_and_its_overlay(
    tf_models: Path, tmp_path: Path
) -> None:
    model_dir = place(tf_models, "seed", tmp_path, "lin", CONFIG)
    result = accelserve.optimize(
        str(model_dir), duration_s=0.2, warmup_s=0.05, max_samples=8, min_gain=0.0, apply=True
    )
    assert [r.label for r in result.rows] == ["xla"]
    assert result.chosen is not None and result.version == 2 and result.served == [2]
    assert (model_dir / "2" / "model.savedmodel" / "saved_model.pb").is_file()
    merged = version_config(read_config(model_dir), model_dir / "2")
    assert merged.parameters["jit_compile"].string_value == "true"


def test_unknown_tf_candidate_is_named() -> None:
    with pytest.raises(ValueError, match="expected names among xla for a TensorFlow model"):
        tf_kinds("fp16", Path("model.savedmodel"))
