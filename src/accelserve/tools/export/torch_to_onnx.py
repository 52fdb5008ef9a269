"""The torch side of ``accelserve export sentence-transformer`` (imports torch and transformers).

The transformer is traced with the TorchScript exporter (``dynamo=False``: the dynamo exporter
needs onnxscript) with dynamic batch and sequence axes. With ``pooling="onnx"`` the masked mean
and the L2 normalization are part of the traced graph; with ``"kernel"`` the graph ends at the
token embeddings and accelserve's kernel does the head.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Sentences of different lengths, so the check exercises padding and the dynamic axes.
_CHECK_IDS = [[101, 7592, 2088, 102, 0, 0, 0], [101, 1037, 2172, 2936, 6251, 2182, 102]]


def _load(transformer_dir: Path) -> Any:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    model = transformers.AutoModel.from_pretrained(str(transformer_dir))
    model.eval()
    return model


class _Hidden(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden


class _Pooled(_Hidden):
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = super().forward(input_ids, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2.0, dim=1)


def export_onnx(transformer_dir: Path, target: Path, pooling: str, opset: int) -> torch.nn.Module:
    """Trace and write ``target``; returns the wrapped torch module (for ``check_onnx``)."""
    model = _load(transformer_dir)
    wrapper = (_Pooled(model) if pooling == "onnx" else _Hidden(model)).eval()
    output = "embedding" if pooling == "onnx" else "token_embeddings"
    ids = torch.tensor(_CHECK_IDS, dtype=torch.int64)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns about its own deprecation and about Python-side
        # branches it traces as constants (checked below against PyTorch on other shapes).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (ids, (ids != 0).to(torch.int64)),
            str(target),
            input_names=["input_ids", "attention_mask"],
            output_names=[output],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                output: {0: "batch"} if pooling == "onnx" else axes,
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return wrapper


def check_onnx(wrapper: torch.nn.Module, path: Path, pooling: str) -> float:
    """Largest |ONNX Runtime - PyTorch| over a few batch and sequence shapes; raises if > 1e-4."""
    import onnxruntime as ort

    from accelserve.errors import ConfigError

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch, length in ((1, 3), (2, 7), (3, 19)):
        rng = np.random.default_rng(batch * 100 + length)
        ids = rng.integers(1000, 5000, size=(batch, length), dtype=np.int64)
        mask = np.ones_like(ids)
        mask[0, max(1, length - 2) :] = 0  # one padded row
        ids[:, 0], ids[mask == 0] = 101, 0
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        with torch.no_grad():
            want = wrapper(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        if pooling != "onnx":  # padded positions are not part of the result
            keep = mask.astype(bool)
            got, want = got[keep], want[keep]
        worst = max(worst, float(np.abs(got - want).max()))
    if not worst <= 1e-4:
        raise ConfigError(
            f"the ONNX export of {path.parent.parent.name} differs from PyTorch by {worst:.2e} "
            "(expected <= 1e-4)"
        )
    return worst
