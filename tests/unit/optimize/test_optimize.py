"""accelserve optimize on tiny ONNX models: every candidate kind loads and answers, a sensitive
model's INT8 candidate is rejected with its reason, the search keeps the sensitive layer in
FP32, the chosen version is written and served through the version policy, bad arguments fail
clearly. Measurements are short (the speeds are not asserted: only what they decide is)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

import accelserve
from accelserve.cli import main
from accelserve.tools.optimize.accuracy import evaluate, parse_tolerances
from accelserve.tools.optimize.candidates import ONNX_SPECS, Runner, build
from accelserve.tools.optimize.search import group_nodes, keep_sensitive
from tests.unit.optimize.toy_models import mlp, mlp_repository

QUICK = ["--duration", "0.2", "--warmup", "0.05", "--quiet", "--max-samples", "16"]


def _x(rows: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((rows, 32)).astype(np.float32)}


def _optimize(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["optimize", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


# the transformer-fusion kinds do not apply to an MLP (test_fusion_smoothing.py covers them)
FUSION_KINDS = {"ort-fusion", "int8-fusion-matmul", "int8-fusion-smooth"}


@pytest.mark.parametrize("kind", sorted(set(ONNX_SPECS) - FUSION_KINDS))
def test_each_candidate_kind_loads_through_accelserve_and_answers(
    kind: str, tmp_path: Path
) -> None:
    source = mlp(tmp_path / "src.onnx")
    calibration = [_x(1, k) for k in range(8)]
    built = build(ONNX_SPECS[kind], source, tmp_path / "work", calibration)
    model_dir = mlp_repository(tmp_path / "repo")
    built.path.replace(model_dir / "1" / "model.onnx")
    model = accelserve.load(str(model_dir))
    try:
        x = _x(4, 99)
        got = model.infer(x)["y"]
    finally:
        model.close()
    want = Runner(source)(x)["y"]
    assert got.dtype == np.float32 and got.shape == want.shape == (4, 32)  # I/O types kept
    cos = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() > 0.99, (kind, cos)


def test_sensitive_model_int8_is_rejected_with_the_output_and_margin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = mlp_repository(tmp_path, sensitive=True)
    table = tmp_path / "o.csv"
    rc, out, _ = _optimize(
        capsys,
        str(model_dir),
        *QUICK,
        "--candidates",
        "ort-graph,int8-dynamic-matmul",
        "--no-search",
        "--dry-run",
        "--csv",
        str(table),
        "--png",
        str(tmp_path / "o.png"),
    )
    assert rc in (0, 1), out
    line = next(t for t in out.splitlines() if " int8-dynamic-matmul " in t)
    assert "rejected: failed tolerance: cosine" in line and "on 'y' (short by" in line, line
    rows = {r["candidate"]: r for r in csv.DictReader(table.read_text().splitlines())}
    assert rows["int8-dynamic-matmul"]["passes"] == "False"
    assert float(rows["int8-dynamic-matmul"]["cosine_min"]) < 0.99
    assert rows["ort-graph"]["passes"] == "True"
    assert float(rows["ort-graph"]["cosine_min"]) > 0.9999
    assert (tmp_path / "o.png").stat().st_size > 0
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt"]  # dry run


def test_search_keeps_only_the_sensitive_layer_in_fp32(tmp_path: Path) -> None:
    source = mlp(tmp_path / "src.onnx", (32, 64, 64, 32), sensitive=True)
    samples = [_x(1, k) for k in range(16)]
    reference_runner = Runner(source)
    reference = [reference_runner(s) for s in samples[1::2]]

    def judge(path: Path):  # type: ignore[no-untyped-def]
        runner = Runner(path)
        return evaluate(lambda k: runner(samples[1::2][k]), reference)

    bounds = parse_tolerances([])
    spec = ONNX_SPECS["int8-dynamic-matmul"]
    whole = build(spec, source, tmp_path / "whole", samples[0::2])
    assert judge(whole.path).failures(bounds)  # the whole-model candidate fails
    notes: list[str] = []
    found = keep_sensitive(spec, source, tmp_path, samples[0::2], judge, bounds, notes.append)
    assert found is not None
    assert found.built.excluded == ["/layer0/MatMul"]
    assert found.kept_groups == 1 and found.groups == 3
    assert not found.accuracy.failures(bounds)
    assert "most sensitive: /layer0/MatMul" in notes[0]
    assert Runner(found.built.path)(samples[1])["y"].shape == (1, 32)


def test_node_groups_follow_the_name_path() -> None:
    nodes = [f"/enc/layer.{k}/{part}/MatMul" for k in range(4) for part in ("q", "k", "v")]
    assert group_nodes(nodes, 12) == [[n] for n in nodes]
    groups = group_nodes(nodes, 4)
    assert [len(g) for g in groups] == [3, 3, 3, 3]
    assert groups[1] == ["/enc/layer.1/q/MatMul", "/enc/layer.1/k/MatMul", "/enc/layer.1/v/MatMul"]
    assert [len(g) for g in group_nodes([f"n{k}" for k in range(10)], 4)] == [3, 3, 3, 1]


def test_apply_serves_the_new_version_and_serve_version_switches_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = mlp_repository(tmp_path)
    rc, out, _ = _optimize(
        capsys, str(model_dir), *QUICK, "--candidates", "ort-graph", "--min-gain", "0", "--apply"
    )
    assert rc == 0, out
    assert "wrote version 2 (ort-graph), served now; served versions: [2]" in out
    assert (model_dir / "2" / "model.onnx").is_file() and (model_dir / "1" / "model.onnx").is_file()
    assert (
        "version_policy: { specific: { versions: [ 2 ] } }"
        in (model_dir / "config.pbtxt").read_text()
    )
    model = accelserve.load(str(model_dir))
    assert model.version == "2"
    model.close()
    rc, out, _ = _optimize(capsys, str(model_dir), "--serve-version", "1")
    assert rc == 0 and "serving version 1" in out
    model = accelserve.load(str(model_dir))
    assert model.version == "1"
    model.close()


def test_without_apply_the_original_stays_served(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = mlp_repository(tmp_path)
    rc, out, _ = _optimize(
        capsys, str(model_dir), *QUICK, "--candidates", "ort-graph", "--min-gain", "0"
    )
    assert rc == 0, out
    assert "wrote version 2 (ort-graph), not served (use --apply); served versions: [1]" in out


def test_python_api_returns_the_rows(tmp_path: Path) -> None:
    model_dir = mlp_repository(tmp_path)
    result = accelserve.optimize(
        str(model_dir),
        candidates="fp16",
        duration_s=0.2,
        warmup_s=0.05,
        max_samples=8,
        write=False,
    )
    assert [r.label for r in result.rows] == ["fp16"]
    assert result.rows[0].accuracy is not None and result.rows[0].passes
    assert result.original.rows_per_s > 0 and result.version is None
    assert len(result.original.repeats) == 1 and len(result.rows[0].repeats) == 1  # 2 rounds


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--tolerance", "cosine=2"],
            "--tolerance cosine: expected a value in [-1, 1]; received 2",
        ),
        (["--tolerance", "speed=1"], "--tolerance: expected NAME=VALUE with NAME among cosine"),
        (["--tolerance", "max_abs=x"], "--tolerance max_abs: expected a number; received 'x'"),
        (["--candidates", "int4"], "--candidates: expected names among ort-graph, fp16"),
        (["--serve-version", "7"], "--serve-version: expected one of the model's versions [1]"),
        (["--min-gain", "-1"], "--min-gain: expected >= 0; received -1"),
        (["--max-samples", "1"], "--max-samples: expected >= 2; received 1"),
        (["--repeats", "0"], "--repeats: expected >= 1; received 0"),
        (["--batch-size", "99"], "--batch-size: expected 1..16 (max_batch_size); received 99"),
        (["--text-file", "corpus.txt"], "--text-file: no ensemble in"),
        (["--apply", "--dry-run"], "--apply and --dry-run: expected one of them"),
    ],
)
def test_bad_arguments_are_named(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = mlp_repository(tmp_path)
    rc, _, err = _optimize(capsys, str(model_dir), *QUICK, *argv)
    assert rc == 2
    assert message in err, err
    assert "Traceback" not in err


def test_unsupported_backend_and_ensemble_and_missing_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jax_dir = tmp_path / "tm"
    (jax_dir / "1").mkdir(parents=True)
    (jax_dir / "1" / "model.jax").write_bytes(b"")
    (jax_dir / "config.pbtxt").write_text('platform: "jax"\nmax_batch_size: 4\n')
    rc, _, err = _optimize(capsys, str(jax_dir), *QUICK)
    assert rc == 2
    assert "backend/platform 'jax' is not supported by optimize; supported: ONNX" in err
    assert "PyTorch ones (platforms 'accelserve_torch_export'" in err
    ens = tmp_path / "ens"
    (ens / "1").mkdir(parents=True)
    (ens / "config.pbtxt").write_text(
        'platform: "ensemble"\nmax_batch_size: 4\ninput [ { name: "x" data_type: TYPE_FP32 '
        'dims: [ 1 ] } ]\noutput [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]\n'
        'ensemble_scheduling { step [ { model_name: "tm" model_version: -1 input_map { key: "x" '
        'value: "x" } output_map { key: "y" value: "y" } } ] }\n'
    )
    rc, _, err = _optimize(capsys, str(ens), *QUICK)
    assert rc == 2 and "is an ensemble: optimize one of its steps' models instead" in err
    rc, _, err = _optimize(capsys, str(tmp_path / "absent"), *QUICK)
    assert rc == 2 and "expected a directory; it does not exist" in err


def test_input_data_file_is_split_and_a_bad_entry_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    model_dir = mlp_repository(tmp_path)
    rng = np.random.default_rng(5)
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps({"data": [{"x": rng.standard_normal(32).tolist()} for _ in range(6)]})
    )
    argv = [str(model_dir), *QUICK, "--candidates", "ort-graph", "--dry-run"]
    rc, out, err = _optimize(capsys, *argv, "--input-data", str(data))
    assert rc in (0, 1), err
    assert f"data file {data} (3 held out, 3 to calibrate)" in out
    data.write_text(json.dumps({"data": [{"x": [1.0] * 32}, {"z": [1.0]}]}))
    rc, _, err = _optimize(capsys, *argv, "--input-data", str(data))
    assert rc == 2 and "entry 1 lacks input(s) ['x']" in err


def test_random_data_stays_within_the_configs_ranges() -> None:
    from accelserve.config import parse_config
    from accelserve.tools.bench.inputs import InputSpec, ModelInfo
    from accelserve.tools.optimize.data import random_samples

    config = parse_config(
        'max_batch_size: 4\nparameters { key: "token_id_inputs" value: { string_value: "ids" } }\n'
        'parameters { key: "vocab_size" value: { string_value: "100" } }\n'
        'parameters { key: "sequence_mask" value: { string_value: "mask" } }\n'
    )
    info = ModelInfo(
        "m", 4, (InputSpec("ids", "INT64", (-1,)), InputSpec("mask", "INT64", (-1,))), ("y",)
    )
    samples = random_samples(info, config, {"ids": (7,)}, count=20, rows=1)
    ids = np.concatenate([s.inputs["ids"] for s in samples])
    assert ids.shape == (20, 7) and ids.min() >= 0 and ids.max() < 100 and ids.max() >= 64
    assert all((s.inputs["mask"] == 1).all() and s.inputs["mask"].shape == (1, 16) for s in samples)


def test_accuracy_reasons_name_the_output_metric_and_margin() -> None:
    from accelserve.tools.optimize.accuracy import compare

    ref = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    tilted = np.array([[1.0, 0.2], [0.0, 1.0]], np.float32)  # row 0: cosine 0.9806
    err = compare("emb", [ref], [tilted])
    assert err.embedding_like and round(err.cosine_min, 4) == 0.9806
    defaults = parse_tolerances([])
    assert any(
        "cosine_min 0.9806 < 0.99 on 'emb' (short by 0.0094)" in f
        for f in evaluate(lambda k: {"emb": tilted}, [{"emb": ref}]).failures(defaults)
    )
    loose = parse_tolerances(["cosine=0.9", "cosine_min=0.9"])
    assert evaluate(lambda k: {"emb": tilted}, [{"emb": ref}]).failures(loose) == []
    strict_rel = parse_tolerances(["cosine=0.9", "cosine_min=0.9", "max_rel=0.1"])
    reasons = evaluate(lambda k: {"emb": tilted}, [{"emb": ref}]).failures(strict_rel)
    assert reasons == ["max_rel 0.2 > 0.1 on 'emb' (2.0x the bound)"]
    ids = np.array([[1, 2, 3]])
    reasons = evaluate(lambda k: {"ids": ids + (ids == 3)}, [{"ids": ids}]).failures(defaults)
    assert reasons == ["1 element(s) of 'ids' differ (exact output)"]
    # a candidate that answers zeros where the reference does not points nowhere: cosine 0
    zeroed = np.array([[0.0, 0.0], [0.0, 1.0]], np.float32)
    assert compare("emb", [ref], [zeroed]).cosine_min == 0.0


def test_the_search_aims_inside_the_tolerance() -> None:
    from accelserve.tools.optimize.accuracy import tightened

    bounds = tightened(parse_tolerances(["max_abs=0.4"]), 0.25)
    assert bounds["cosine_min"] == pytest.approx(0.9925)
    assert bounds["cosine"] == pytest.approx(0.99625)
    assert bounds["max_rel"] == pytest.approx(0.0075) and bounds["max_abs"] == pytest.approx(0.3)
    with pytest.raises(
        ValueError, match=r"--search-reserve: expected a value in \[0, 1\); received 1"
    ):
        tightened(bounds, 1.0)
