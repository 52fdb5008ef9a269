"""The PyTorch candidates of ``accelserve optimize`` on tiny ``.pt2``/TorchScript models: each
builds a file the torch backend loads (with the candidate's config overlay) and that answers
close to the original; BF16 on a model whose output BF16 cannot hold is rejected with the
output and the margin; the chosen candidate is written as a version whose overlay only that
version gets."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

import accelserve
from accelserve.cli import main
from accelserve.config import read_config, version_config
from accelserve.errors import ConfigError
from accelserve.tools.optimize.families import Family
from accelserve.tools.optimize.torch_candidates import TORCH_SPECS, torch_kinds
from tests.unit.optimize.torch_toys import torch_repository

QUICK = ["--duration", "0.2", "--warmup", "0.05", "--quiet", "--max-samples", "8"]
# compile takes tens of seconds on two shared cores: its own test below
QUICK_KINDS = sorted(k for k in TORCH_SPECS if "compile" not in k)


def _x(rows: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)}


def _family(model_dir: Path) -> Family:
    return Family("torch", model_dir, model_dir / "1" / "model.pt2")


# inductor's CPU path uses torch.jit.script_method internally, which warns of its deprecation
INDUCTOR = pytest.mark.filterwarnings("ignore:`torch.jit.script_method`:DeprecationWarning")


@pytest.mark.parametrize("kind", [*QUICK_KINDS, pytest.param("compile", marks=INDUCTOR)])
def test_each_candidate_loads_through_the_torch_backend_and_answers(
    kind: str, tmp_path: Path
) -> None:
    model_dir = torch_repository(tmp_path / "repo")
    family = _family(model_dir)
    spec = TORCH_SPECS[kind]
    built = family.build(spec, tmp_path / "work", [])
    assert built.path.name == "model.pt2" and built.path.is_file()
    original = family.runner(family.source)(_x(3))["output__0"]
    answer = family.runner(built.path, spec.config)(_x(3))["output__0"]
    assert answer.shape == (3, 8) and answer.dtype == np.float32
    np.testing.assert_allclose(answer, original, atol=0.05)


def test_int8_weight_stores_int8_weights_and_keeps_the_batch_dimension(tmp_path: Path) -> None:
    import torch

    model_dir = torch_repository(tmp_path / "repo")
    built = _family(model_dir).build(TORCH_SPECS["int8-weight"], tmp_path / "work", [])
    program = torch.export.load(str(built.path))
    dtypes = {name: t.dtype for name, t in program.state_dict.items()}
    assert dtypes["first_weight_int8"] == torch.int8 and dtypes["second_weight_int8"] == torch.int8
    assert "first.weight" not in dtypes  # the FP32 weights are gone
    module = program.module()
    assert module(torch.zeros(1, 16)).shape == (1, 8)
    assert module(torch.zeros(7, 16)).shape == (7, 8)


def test_bf16_on_a_sensitive_model_is_rejected_with_the_output_and_margin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = torch_repository(tmp_path, sensitive=True)
    argv = ["optimize", str(model_dir), *QUICK, "--candidates", "bf16-autocast,int8-weight"]
    rc = main([*argv, "--min-gain", "0", "--dry-run"])
    out = capsys.readouterr().out
    line = next(t for t in out.splitlines() if "bf16-autocast" in t)
    assert "rejected: failed tolerance: cosine" in line and "on 'output__0' (short by" in line
    line = next(t for t in out.splitlines() if t.lstrip("* ").startswith("int8-weight"))
    assert "failed tolerance" not in line, out  # weight-only INT8 keeps the FP32 add
    assert rc == 0, out


def test_the_chosen_candidate_is_a_version_with_its_overlay(tmp_path: Path) -> None:
    model_dir = torch_repository(tmp_path)
    result = accelserve.optimize(
        str(model_dir),
        candidates="bf16-autocast",
        duration_s=0.2,
        warmup_s=0.05,
        max_samples=8,
        min_gain=0.0,
        apply=True,
    )
    assert result.chosen is not None and result.chosen.label == "bf16-autocast"
    assert result.version == 2 and result.served == [2]
    overlay = model_dir / "2" / "config_overlay.pbtxt"
    assert 'key: "autocast"' in overlay.read_text()
    assert (model_dir / "2" / "model.pt2").read_bytes() == (
        model_dir / "1" / "model.pt2"
    ).read_bytes()
    config = read_config(model_dir)
    assert version_config(config, model_dir / "2").parameters["autocast"].string_value == "bf16"
    assert "autocast" not in version_config(config, model_dir / "1").parameters


def test_torchscript_gets_autocast_only_and_compile_is_refused_by_name(tmp_path: Path) -> None:
    with warnings.catch_warnings():  # PyTorch deprecates writing TorchScript, not serving it
        warnings.simplefilter("ignore", DeprecationWarning)
        model_dir = torch_repository(tmp_path, script=True)
    source = model_dir / "1" / "model.pt"
    assert [s.name for s in torch_kinds("", source)] == ["bf16-autocast"]
    with pytest.raises(ValueError, match=r"'compile' needs a torch\.export program"):
        torch_kinds("compile", source)
    with pytest.raises(ValueError, match="expected names among compile, bf16-autocast"):
        torch_kinds("fp16", source)
    family = Family("torch", model_dir, source)
    spec = TORCH_SPECS["bf16-autocast"]
    built = family.build(spec, tmp_path / "work", [])
    answer = family.runner(built.path, spec.config)({"INPUT__0": _x(2)["x"]})
    assert answer["OUTPUT__0"].shape == (2, 8) and answer["OUTPUT__0"].dtype == np.float32


def test_an_overlay_may_not_change_what_describes_the_model(tmp_path: Path) -> None:
    model_dir = torch_repository(tmp_path)
    (model_dir / "1" / "config_overlay.pbtxt").write_text("max_batch_size: 2\n")
    with pytest.raises(ConfigError, match=r"1/config_overlay\.pbtxt: field 'max_batch_size' is"):
        version_config(read_config(model_dir), model_dir / "1")
    (model_dir / "1" / "config_overlay.pbtxt").write_text("dynamic_batching { }\n")
    with pytest.raises(ConfigError, match=r"field 'dynamic_batching' is the model's"):
        version_config(read_config(model_dir), model_dir / "1")
    (model_dir / "1" / "config_overlay.pbtxt").write_text("parameters { key: 1 }\n")
    with pytest.raises(ConfigError, match=r"1/config_overlay\.pbtxt"):
        version_config(read_config(model_dir), model_dir / "1")
