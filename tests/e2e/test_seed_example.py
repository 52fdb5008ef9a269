"""examples/seed/seed_deploy.py end to end in CPU mode: with CUDA hidden from accelserve
(ACCELSERVE_DISABLE_CUDA=1) the script exports the model with accelserve.export, asks for
/device:GPU:0, says it falls back to the CPU, and every answer (in process, tritonclient, TF
Serving REST) must agree with TensorFlow's, or the script exits 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("tensorflow")
pytest.importorskip("tritonclient.http")


def test_the_seed_example_runs_on_the_cpu_and_agrees_with_tensorflow(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    env = {**os.environ, "ACCELSERVE_DISABLE_CUDA": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    script = ROOT / "examples" / "seed" / "seed_deploy.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--repository", str(repository)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    output = completed.stdout
    assert completed.returncode == 0, output + completed.stderr
    assert "[2] exported version 1 (tensorflow_savedmodel)" in output
    assert "[3] /device:GPU:0 is not available" in output
    assert "running on the CPU instead" in output
    assert "[3] loaded with accelserve.load on cpu" in output
    assert "[3] in process: shape [100, 2]" in output
    assert "[4] tritonclient (KServe V2): shape [100, 2]" in output
    assert "[4] TF Serving REST: shape [100, 2]" in output
    assert output.rstrip().endswith("all answers agree with TensorFlow")
    config = (repository / "seed" / "config.pbtxt").read_text()
    assert 'platform: "tensorflow_savedmodel"' in config
    assert "max_batch_size: 128" in config
    assert (repository / "seed" / "1" / "model.savedmodel" / "saved_model.pb").is_file()
