"""Model files into a repository: accelserve.export on an onnx.ModelProto or a path, and the
``accelserve export onnx|pt2|savedmodel`` command run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import accelserve
from accelserve.cli import main
from accelserve.errors import InvalidArgumentError
from tests.model_builders import build_onnx, build_torch, mlp_reference

ROOT = Path(__file__).resolve().parents[3]


def _accelserve(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "accelserve.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("files")
    build_onnx(root)
    build_torch(root)
    return root


def test_cli_onnx_writes_config_from_the_file_and_checks_it_loads(
    files: Path, tmp_path: Path
) -> None:
    done = _accelserve(
        "export", "onnx", str(files / "onnx_mlp/1/model.onnx"), str(tmp_path / "repo/mlp")
    )
    assert done.returncode == 0, done.stderr
    assert "running once on random inputs within the config: done" in done.stderr
    text = (tmp_path / "repo/mlp/config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in text
    assert "max_batch_size: 4" in text and "dynamic_batching" in text  # the file's batch dim
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    with accelserve.load(str(tmp_path / "repo/mlp")) as loaded:
        np.testing.assert_allclose(
            loaded.infer({"x": x})["y"], mlp_reference(x), rtol=1e-5, atol=1e-5
        )


def test_cli_pt2_with_a_max_batch_size_and_the_next_version(files: Path, tmp_path: Path) -> None:
    pt2 = str(files / "torch_mlp/1/model.pt2")
    for _ in range(2):
        assert main(["export", "pt2", pt2, str(tmp_path / "r/m"), "--max-batch-size", "8"]) == 0
    assert sorted(p.name for p in (tmp_path / "r/m").iterdir()) == ["1", "2", "config.pbtxt"]
    text = (tmp_path / "r/m/config.pbtxt").read_text()
    assert 'platform: "accelserve_torch_export"' in text and "max_batch_size: 8" in text


def test_cli_whole_shapes_with_max_batch_size_0(files: Path, tmp_path: Path) -> None:
    onnx_file = str(files / "onnx_mlp/1/model.onnx")
    assert main(["export", "onnx", onnx_file, str(tmp_path / "r/m"), "--max-batch-size", "0"]) == 0
    config = accelserve.load(str(tmp_path / "r/m")).config
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, 4]


def test_cli_errors_are_one_line_naming_the_argument(
    files: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "onnx", str(tmp_path / "nope.onnx"), str(tmp_path / "r/m")]) == 2
    assert "path: expected a model file; " in capsys.readouterr().err
    pt2 = str(files / "torch_mlp/1/model.pt2")
    assert main(["export", "onnx", pt2, str(tmp_path / "r/m")]) == 2
    assert "path: expected a model file of format 'onnx'; received" in capsys.readouterr().err
    assert main(["export", "pt2", pt2, "justaname"]) == 2
    assert "target: expected 'REPO/NAME'" in capsys.readouterr().err
    assert main(["export", "pt2", pt2, str(tmp_path / "r/m"), "--max-batch-size", "-1"]) == 2
    assert "max_batch_size: expected >= 0; received -1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_export_of_an_onnx_model_proto_checks_the_examples_against_a_reference(
    files: Path, tmp_path: Path
) -> None:
    proto = onnx.load(str(files / "onnx_mlp/1/model.onnx"))
    x = np.random.default_rng(2).standard_normal((2, 4)).astype(np.float32)
    result = accelserve.export(
        proto,
        tmp_path / "r" / "proto",
        example_inputs={"x": x},
        max_batch_size=4,
        reference=lambda inputs: mlp_reference(inputs["x"]),
        atol=1e-5,
        progress=False,
    )
    assert result.platform == "onnxruntime_onnx" and result.max_difference is not None
    assert result.max_difference < 1e-5 and result.config.max_batch_size == 4


def test_examples_that_do_not_fit_a_files_inputs_are_named(files: Path, tmp_path: Path) -> None:
    x = np.ones((1, 4), np.float32)
    with pytest.raises(
        InvalidArgumentError,
        match=r"example_inputs: model 'm' takes 1 inputs \(x\); received 2",
    ):
        accelserve.export(
            str(files / "onnx_mlp/1/model.onnx"),
            tmp_path / "r" / "m",
            example_inputs=(x, x),
            progress=False,
        )
    assert not (tmp_path / "r" / "m").exists()
