"""Models into groups (one Ray Serve deployment each), from the repository's configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from accelserve.deploy.groups import parse_group_specs, plan_groups
from accelserve.errors import ConfigError

MODEL = 'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'


def ensemble(*steps: str) -> str:
    listed = ", ".join(f'{{ model_name: "{s}" model_version: -1 }}' for s in steps)
    return f'platform: "ensemble"\nmax_batch_size: 8\nensemble_scheduling {{ step [{listed}] }}\n'


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    configs = {
        "a": MODEL,
        "b": MODEL,
        "c": MODEL,
        "pre": MODEL,
        "inner": ensemble("pre"),
        "pipeline": ensemble("inner", "c"),
    }
    for name, text in configs.items():
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\n{text}')
    return tmp_path


def as_dict(groups):
    return {g.name: list(g.models) for g in groups}


def test_without_groups_one_group_holds_the_whole_repository(repository):
    groups = plan_groups(repository)
    assert as_dict(groups) == {"default": ["a", "b", "c", "inner", "pipeline", "pre"]}
    assert len(groups[0].configs) == 6


def test_named_groups_split_the_repository_and_the_rest_is_default(repository):
    groups = plan_groups(repository, {"fast": ["a"], "other": ["b"]})
    assert as_dict(groups) == {
        "fast": ["a"],
        "other": ["b"],
        "default": ["c", "inner", "pipeline", "pre"],
    }


def test_an_ensemble_pulls_its_steps_nested_ones_included_into_its_group(repository):
    groups = plan_groups(repository, {"pipe": ["pipeline"]})
    assert as_dict(groups) == {"pipe": ["c", "inner", "pipeline", "pre"], "default": ["a", "b"]}


def test_an_ensemble_step_in_another_group_is_an_error_naming_both(repository):
    with pytest.raises(ConfigError, match=r"ensemble 'inner'.*'pre', which is in group 'x'"):
        plan_groups(repository, {"x": ["pre"], "y": ["inner"]})


def test_a_model_in_two_groups_is_an_error(repository):
    with pytest.raises(ConfigError, match="'a' is in 'x' and 'y'"):
        plan_groups(repository, {"x": ["a"], "y": ["a", "b"]})


def test_a_group_naming_an_unknown_model_lists_the_repository(repository):
    with pytest.raises(ConfigError, match=r"--group x: expected models.*received 'nope'"):
        plan_groups(repository, {"x": ["nope"]})


def test_a_broken_config_stays_in_its_group_for_the_replica_to_report(repository):
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "config.pbtxt").write_text("max_batch_size: [")
    groups = plan_groups(repository)
    assert "broken" in groups[0].models
    assert len(groups[0].configs) == 6  # its config is left out of the resources


def test_group_specs_parse():
    assert parse_group_specs(["fast=a, b", "slow=c"]) == {"fast": ["a", "b"], "slow": ["c"]}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nogroup", "expected NAME=model"),
        ("=a", "expected NAME=model"),
        ("bad name=a", "expected NAME=model"),
        ("g=", "--group g: expected at least one model; received none"),
    ],
)
def test_bad_group_specs_name_what_was_expected_and_received(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_group_specs([spec])
    assert spec in str(info.value) or "received none" in str(info.value)


def test_a_group_named_twice_is_an_error():
    with pytest.raises(ConfigError, match="received 'g' twice"):
        parse_group_specs(["g=a", "g=b"])


def test_an_unnamed_ensemble_joins_the_group_of_its_named_step(repository):
    groups = plan_groups(repository, {"x": ["pre"]})
    assert as_dict(groups) == {"x": ["c", "inner", "pipeline", "pre"], "default": ["a", "b"]}
