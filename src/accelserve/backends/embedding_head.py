"""Sentence-embedding head: masked mean pooling over tokens, then L2 normalization.

Inputs ``token_embeddings`` (FP32 [batch, tokens, hidden]) and ``attention_mask`` (integer
[batch, tokens]); output ``embedding`` (FP32 [batch, hidden]). The work is one call to
``accelserve.kernels.masked_mean_pool_l2`` on this instance's device: NumPy arrays on CPU (the
numba provider), torch CUDA tensors on a GPU (the Triton provider), jax arrays on a TPU.

The version directory holds no file. The names of the inputs and the output follow the config
(one FP32 3-d input, one integer 2-d input, one FP32 output), so a head can be dropped behind
any transformer whose outputs are named differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from accelserve import kernels
from accelserve.backends.base import Backend
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError
from accelserve.protocol.model_config_pb2 import DataType, ModelConfig
from accelserve.types import TensorSpec

_CONFIG_INT = ("TYPE_INT64", "TYPE_INT32", "TYPE_BOOL", "TYPE_INT8", "TYPE_UINT8")


class EmbeddingHeadBackend(Backend):
    default_filename = ""

    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
        hidden_name, mask_name, output_name = "token_embeddings", "attention_mask", "embedding"
        if config.input:
            floats = [i for i in config.input if _type_name(i) == "TYPE_FP32"]
            ints = [i for i in config.input if _type_name(i) in _CONFIG_INT]
            if len(config.input) != 2 or len(floats) != 1 or len(ints) != 1:
                raise ConfigError(
                    f"model '{config.name}': the embedding head expects 2 inputs, one TYPE_FP32 "
                    "[tokens, hidden] and one integer [tokens] mask; received "
                    + ", ".join(f"{i.name} {_type_name(i)} {list(i.dims)}" for i in config.input)
                )
            hidden_name, mask_name = floats[0].name, ints[0].name
        if config.output:
            if len(config.output) != 1:
                raise ConfigError(
                    f"model '{config.name}': the embedding head has one output; the config "
                    f"declares {len(config.output)}"
                )
            output_name = config.output[0].name
        self._names = (hidden_name, mask_name, output_name)
        self.device = device
        self._torch_device = _torch_device(device)
        self.inputs = [
            TensorSpec(hidden_name, "FP32", (-1, -1)),
            TensorSpec(mask_name, _v2_mask(config, mask_name), (-1,)),
        ]
        self.outputs = [TensorSpec(output_name, "FP32", (-1,))]
        self.max_batch_size = -1
        # Compile the kernel (or load it from numba's cache) now, not on the first request.
        self.infer(
            {hidden_name: np.ones((1, 1, 8), np.float32), mask_name: np.ones((1, 1), np.int64)}
        )

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        hidden_name, mask_name, output_name = self._names
        hidden, mask = inputs[hidden_name], inputs[mask_name]
        if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
            raise ModelExecutionError(
                f"embedding head: '{hidden_name}' {list(hidden.shape)} and '{mask_name}' "
                f"{list(mask.shape)} must be [batch, tokens, hidden] and [batch, tokens]"
            )
        if self._torch_device is None:
            pooled = kernels.masked_mean_pool_l2(hidden, mask)
        else:  # run where the transformer ran, then bring the small result back
            import torch

            h = torch.from_numpy(np.ascontiguousarray(hidden)).to(self._torch_device)
            m = torch.from_numpy(np.ascontiguousarray(mask)).to(self._torch_device)
            pooled = kernels.masked_mean_pool_l2(h, m).cpu().numpy()
        return {output_name: np.asarray(pooled, dtype=np.float32)}


def _type_name(tensor: Any) -> str:
    return str(DataType.Name(tensor.data_type))


def _v2_mask(config: ModelConfig, name: str) -> str:
    for tensor in config.input:
        if tensor.name == name:
            return _type_name(tensor).removeprefix("TYPE_")
    return "INT64"


def _torch_device(device: Device) -> Any:
    if device.kind == "cpu":
        return None
    if device.kind != "cuda":
        raise ConfigError(f"the embedding head runs on cpu or cuda:N; received {device}")
    return f"cuda:{device.index}"
