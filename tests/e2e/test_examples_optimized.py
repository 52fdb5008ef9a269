"""`accelserve prepare-examples` runs the MiniLM example's recorded optimization recipe: the
candidate is written as version 2 (and served: the repository serves its latest version) only
when it passes the tolerance on held-out text through the ensemble; otherwise version 1 stays
with the reason printed. The verdict is cached; a bad recipe is a clear error. The recipe's text
files are cut to a few lines so each run takes seconds, not minutes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from accelserve.cli import main
from accelserve.tools.examples.build import prepare
from tests.conftest import EXAMPLES, ServerProcess

MODELS = ("minilm", "minilm_tokenizer", "minilm_transformer", "minilm_head")
RECIPE_FILES = ("optimize_recipe.json", "optimize_calibration.txt", "optimize_held_out.txt")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's four MiniLM models, built once (the export is cached across sessions)."""
    repository = tmp_path_factory.mktemp("examples") / "models"
    for name in MODELS:
        (repository / name).mkdir(parents=True)
        shutil.copy(EXAMPLES / name / "config.pbtxt", repository / name)
    prepare(repository)
    return repository


def _repository(built: Path, tmp_path: Path, **changes: object) -> Path:
    """A copy of ``built`` with the example's recipe (short texts), ``changes`` applied."""
    repository = tmp_path / "models"
    shutil.copytree(built, repository)
    transformer = repository / "minilm_transformer"
    for name in RECIPE_FILES:
        shutil.copy(EXAMPLES / "minilm_transformer" / name, transformer / name)
    recipe = json.loads((transformer / "optimize_recipe.json").read_text())
    recipe.update({"max_samples": 12, **changes})
    (transformer / "optimize_recipe.json").write_text(json.dumps(recipe))
    return repository


def _prepare(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["prepare-examples", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_recipe_writes_version_2_which_the_server_serves_and_is_cached(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = _repository(built, tmp_path)
    transformer = repository / "minilm_transformer"
    rc, out, err = _prepare(capsys, str(repository))
    assert rc == 0, err
    assert "minilm_transformer: serving version 2 (int8-smooth-matmul): " in out, out
    assert "on 12 held-out texts through ensemble 'minilm' against version 1" in out
    record = json.loads((transformer / "2" / "optimize.json").read_text())
    assert record["candidate"] == "int8-smooth-matmul" and "embedding: cos " in record["accuracy"]
    rc, again, _ = _prepare(capsys, str(repository))
    assert rc == 0 and again.strip().endswith("(cached)"), again
    assert sorted(p.name for p in transformer.iterdir() if p.is_dir()) == ["1", "2"]

    server = ServerProcess(repository)
    try:
        meta = httpx.get(f"{server.base}/v2/models/minilm_transformer").json()
        assert meta["versions"] == ["2"], meta
        body = {
            "inputs": [
                {
                    "name": "text",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "data": ["a short sentence about the served version"],
                }
            ]
        }
        answer = httpx.post(f"{server.base}/v2/models/minilm/infer", json=body).json()
        vector = np.asarray(answer["outputs"][0]["data"], np.float32)
        assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    finally:
        server.stop()


def test_a_recipe_that_fails_the_tolerance_keeps_fp32_and_says_why(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = _repository(built, tmp_path, tolerance=["cosine_min=0.99999"])
    rc, out, err = _prepare(capsys, str(repository))
    assert rc == 0, err
    line = next(t for t in out.splitlines() if "stays served" in t)
    assert "minilm_transformer: version 1 (FP32) stays served: int8-smooth-matmul failed" in line
    assert "cosine_min 0.9" in line and "< 0.99999 on 'embedding'" in line, line
    assert not (repository / "minilm_transformer" / "2").exists()
    rc, again, _ = _prepare(capsys, str(repository))
    assert "stays served" in again and again.strip().endswith("(cached)")


def test_no_optimize_skips_the_recipe_and_a_bad_recipe_is_named(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = _repository(built, tmp_path, candidate="int9-magic")
    rc, out, _ = _prepare(capsys, str(repository), "--no-optimize")
    assert rc == 0 and "recipe" not in out
    rc, _, err = _prepare(capsys, str(repository))
    assert rc == 2
    assert "optimize_recipe.json: 'candidate' expected one of " in err and "'int9-magic'" in err
