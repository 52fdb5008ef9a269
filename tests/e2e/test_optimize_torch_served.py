"""accelserve optimize on a PyTorch model, served: ``--apply`` with the BF16 autocast candidate
writes version 2 as the same ``.pt2`` plus ``config_overlay.pbtxt``; the real server serves
version 2 with ``autocast: bf16`` in that version's config only, and it answers."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from accelserve.cli import main
from tests.conftest import ServerProcess
from tests.unit.optimize.torch_toys import torch_repository

QUICK = ["--duration", "0.2", "--warmup", "0.05", "--quiet", "--max-samples", "8"]


def test_a_torch_candidate_is_served_with_its_overlay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    model_dir = torch_repository(repository)
    argv = ["optimize", str(model_dir), *QUICK, "--candidates", "bf16-autocast"]
    assert main([*argv, "--min-gain", "0", "--apply"]) == 0, capsys.readouterr()
    # both versions served, to compare their configs
    config = (model_dir / "config.pbtxt").read_text()
    (model_dir / "config.pbtxt").write_text(
        config.replace("versions: [ 2 ]", "versions: [ 1, 2 ]").replace(
            "versions: 2", "versions: 1 versions: 2"
        )
    )
    server = ServerProcess(repository)
    try:
        base = f"{server.base}/v2/models/tmlp/versions"
        served = httpx.get(f"{base}/2/config").json()["parameters"]
        assert served["autocast"] == {"string_value": "bf16"}
        assert "autocast" not in httpx.get(f"{base}/1/config").json().get("parameters", {})
        x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
        body = {
            "inputs": [
                {"name": "x", "shape": [2, 16], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        answers = [httpx.post(f"{base}/{v}/infer", json=body) for v in (1, 2)]
        assert [a.status_code for a in answers] == [200, 200], answers[1].text
        fp32, bf16 = (np.array(a.json()["outputs"][0]["data"]) for a in answers)
        assert answers[1].json()["outputs"][0]["datatype"] == "FP32"
        np.testing.assert_allclose(bf16, fp32, atol=0.05)
    finally:
        server.stop()
