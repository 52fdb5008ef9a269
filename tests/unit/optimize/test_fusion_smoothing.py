"""The transformer-fusion and activation-smoothing candidates: the fused graph of an exported
BERT (scaled-dot-product attention) has Attention/SkipLayerNorm/BiasGelu ops and computes the
same outputs; fusion candidates are skipped (not failed) where nothing fuses; smoothing keeps the
FP32 function and rescues a model whose plain INT8 quantization fails."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

import accelserve
from accelserve.cli import main
from accelserve.tools.optimize.accuracy import evaluate, parse_tolerances
from accelserve.tools.optimize.candidates import ONNX_SPECS, NotApplicable, Runner, build
from accelserve.tools.optimize.onnx_fusion import fuse_transformer
from accelserve.tools.optimize.onnx_smooth import smooth
from tests.unit.optimize.toy_models import bert_inputs, mlp, mlp_repository, tiny_bert

QUICK = ["--duration", "0.2", "--warmup", "0.05", "--max-samples", "16", "--quiet"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("bert") / "model.onnx")


def _cosine_min(got: np.ndarray, want: np.ndarray) -> float:
    got, want = got.reshape(-1, got.shape[-1]), want.reshape(-1, want.shape[-1])
    cos = np.sum(got * want, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return float(cos.min())


def test_exported_sdpa_attention_is_fused_and_computes_the_same(bert: Path) -> None:
    fused = fuse_transformer(str(bert))
    ops = Counter(n.op_type for n in fused.model.graph.node)
    assert fused.counts["Attention"] == ops["Attention"] == 2  # one per layer
    assert fused.counts["SkipLayerNormalization"] == 4 and fused.counts["BiasGelu"] == 2
    assert ops["Softmax"] == ops["IsNaN"] == 0  # the unfused attention is gone
    path = bert.parent / "fused.onnx"
    onnx.save(fused.model, str(path))
    original, candidate = Runner(bert), Runner(path)
    for rows, length in ((1, 5), (3, 11)):  # row 0 of a batch is padded
        x = bert_inputs(rows, length, seed=rows)
        keep = x["attention_mask"].astype(bool)
        want = original(x)["token_embeddings"][keep]
        got = candidate(x)["token_embeddings"][keep]
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("kind", ["ort-fusion", "int8-fusion-matmul", "int8-fusion-smooth"])
def test_fusion_kinds_build_a_model_that_answers_close_to_the_original(
    kind: str, bert: Path, tmp_path: Path
) -> None:
    calibration = [bert_inputs(1, 4 + k, seed=k) for k in range(8)]
    built = build(ONNX_SPECS[kind], bert, tmp_path, calibration)
    ops = {n.op_type for n in onnx.load(str(built.path)).graph.node}
    assert ("QAttention" if kind.startswith("int8") else "Attention") in ops
    x = bert_inputs(3, 9, seed=42)
    keep = x["attention_mask"].astype(bool)
    got = Runner(built.path)(x)["token_embeddings"]
    want = Runner(bert)(x)["token_embeddings"]
    assert got.dtype == np.float32 and got.shape == want.shape
    assert _cosine_min(got[keep], want[keep]) > (0.9999 if kind == "ort-fusion" else 0.98)


def test_fusion_kinds_do_not_apply_to_a_model_without_a_transformer(tmp_path: Path) -> None:
    source = mlp(tmp_path / "mlp.onnx")
    with pytest.raises(NotApplicable, match="no transformer pattern to fuse"):
        build(ONNX_SPECS["ort-fusion"], source, tmp_path / "work", [])


def test_optimize_skips_a_fusion_kind_that_does_not_apply(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = mlp_repository(tmp_path)
    rc = main(
        [
            "optimize",
            str(model_dir),
            *QUICK[:-3],
            "--candidates",
            "ort-fusion,ort-graph",
            "--dry-run",
        ]
    )
    out, err = capsys.readouterr()
    assert rc in (0, 1), out + err
    assert " ort-graph " in out and " ort-fusion " not in out  # no row: skipped
    assert "ort-fusion: skipped: no transformer pattern to fuse" in out + err


def _x(rows: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((rows, 32)).astype(np.float32)}


def test_smoothing_keeps_the_fp32_function(tmp_path: Path) -> None:
    source = mlp(tmp_path / "mlp.onnx", sensitive=True)
    model = onnx.load(str(source))
    assert smooth(model, [_x(1, k) for k in range(8)]) == 2  # one activation per layer
    path = tmp_path / "smoothed.onnx"
    onnx.save(model, str(path))
    x = _x(5, 99)
    np.testing.assert_allclose(Runner(path)(x)["y"], Runner(source)(x)["y"], rtol=1e-4, atol=1e-4)


def test_smoothing_rescues_the_model_plain_int8_breaks(tmp_path: Path) -> None:
    source = mlp(tmp_path / "mlp.onnx", sensitive=True)  # an outlier feature in layer 0's input
    samples = [_x(1, k) for k in range(16)]
    reference = [Runner(source)(s) for s in samples[1::2]]
    bounds = parse_tolerances([])

    def judge(path: Path) -> list[str]:
        runner = Runner(path)
        return evaluate(lambda k: runner(samples[1::2][k]), reference).failures(bounds)

    plain = build(ONNX_SPECS["int8-dynamic-matmul"], source, tmp_path, samples[0::2])
    smoothed = build(ONNX_SPECS["int8-smooth-matmul"], source, tmp_path, samples[0::2])
    assert judge(plain.path)  # fails: the outlier takes the whole INT8 range
    assert not judge(smoothed.path), judge(smoothed.path)
    model_dir = mlp_repository(tmp_path / "repo")
    smoothed.path.replace(model_dir / "1" / "model.onnx")
    served = accelserve.load(str(model_dir))
    try:
        assert served.infer(_x(2, 7))["y"].shape == (2, 32)
    finally:
        served.close()


def test_smoothing_without_calibration_data_is_named(tmp_path: Path) -> None:
    model = onnx.load(str(mlp(tmp_path / "mlp.onnx")))
    with pytest.raises(ValueError, match="needs calibration data"):
        smooth(model, [])
