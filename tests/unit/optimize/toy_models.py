"""Tiny ONNX models for the optimize tests, built with onnx.helper."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OUTLIER = 1.0e4


def mlp(path: Path, dims: tuple[int, ...] = (32, 64, 32), *, sensitive: bool = False) -> Path:
    """x[N, d0] -> MatMul/Add(/Relu) layers -> y[N, d_last] (float32).

    ``sensitive``: a constant with one huge feature is added to the first layer's input, and that
    feature's weight row is zero, so FP32 ignores it while an INT8 activation range spanning it
    rounds every ordinary feature to zero: layer 0 cannot be quantized; the later layers can.
    """
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "x"
    if sensitive:
        shift = np.zeros(dims[0], np.float32)
        shift[0] = OUTLIER
        inits.append(numpy_helper.from_array(shift, "shift"))
        nodes.append(helper.make_node("Add", ["x", "shift"], ["xs"], name="/input/Add"))
        x = "xs"
    for k, (a, b) in enumerate(itertools.pairwise(dims)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        if sensitive and k == 0:
            w[0, :] = 0.0
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        inits.append(numpy_helper.from_array(np.full(b, 0.1, np.float32), f"b{k}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{k}"], [f"m{k}"], name=f"/layer{k}/MatMul"))
        nodes.append(helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"], name=f"/layer{k}/Add"))
        x = f"a{k}"
        if k < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [x], [f"r{k}"], name=f"/layer{k}/Relu"))
            x = f"r{k}"
    nodes.append(helper.make_node("Identity", [x], ["y"], name="/output/Identity"))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dims[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dims[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def mlp_repository(repository: Path, name: str = "mlp", **options: object) -> Path:
    """``repository/name`` with version 1 and a batching config."""
    model_dir = repository / name
    mlp(model_dir / "1" / "model.onnx", **options)  # type: ignore[arg-type]
    (model_dir / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 16\n'
        "dynamic_batching { }\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )
    return model_dir


def tiny_bert(path: Path, layers: int = 2) -> Path:
    """A randomly initialized BERT (hidden 32, 2 heads) exported like the MiniLM example
    (``accelserve export``'s TorchScript exporter, scaled-dot-product attention), so its
    attention blocks have the pattern ``onnx_fusion`` matches. Imports torch/transformers."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=8000,  # the exporter traces with ids up to 7592
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config, add_pooling_layer=False)
    model.eval()
    directory = path.parent / "tiny_bert_source"
    model.save_pretrained(directory)
    from accelserve.tools.export.torch_to_onnx import export_onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(directory, path, "kernel", 17)
    return path


def bert_inputs(rows: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """Token ids below the tiny vocabulary and a right-padded mask (row 0 shorter)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 8000, (rows, length)).astype(np.int64)
    mask = np.ones_like(ids)
    if rows > 1:
        mask[0, length // 2 :] = 0
        ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask}
