"""Tiny PyTorch models for the optimize tests: a ``.pt2`` MLP (batch dimension dynamic), one
whose output BF16 cannot hold, and the MLP as TorchScript."""

from __future__ import annotations

from pathlib import Path

import torch

OFFSET = 1000.0  # the sensitive model's bias: its output is a small difference from it


class Mlp(torch.nn.Module):
    def __init__(self, sensitive: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first = torch.nn.Linear(16, 32)
        self.second = torch.nn.Linear(32, 8)
        self.sensitive = sensitive
        if sensitive:  # y = (h W + 1000) - 1000: BF16 keeps ~3 digits of the 1000
            with torch.no_grad():
                self.second.bias.fill_(OFFSET)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.second(torch.relu(self.first(x)))
        return y - OFFSET if self.sensitive else y


def torch_repository(
    repository: Path, name: str = "tmlp", *, sensitive: bool = False, script: bool = False
) -> Path:
    """``repository/name/1/model.pt2`` (or ``model.pt`` TorchScript) and a batching config."""
    model_dir = repository / name
    (model_dir / "1").mkdir(parents=True)
    module = Mlp(sensitive).eval()
    example = (torch.randn(4, 16),)
    if script:
        torch.jit.trace(module, example).save(str(model_dir / "1" / "model.pt"))
        platform = "pytorch_libtorch"
        tensors = (
            'input [ { name: "INPUT__0" data_type: TYPE_FP32 dims: [ 16 ] } ]\n'
            'output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 8 ] } ]\n'
        )
    else:
        batch = torch.export.Dim("batch")
        program = torch.export.export(module, example, dynamic_shapes=({0: batch},))
        torch.export.save(program, str(model_dir / "1" / "model.pt2"))
        platform, tensors = "accelserve_torch_export", ""
    (model_dir / "config.pbtxt").write_text(
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: 8\n{tensors}'
        "dynamic_batching { }\ninstance_group [ { count: 1 kind: KIND_CPU } ]\n"
    )
    return model_dir
