"""ONNX Runtime backend: CPU execution provider, CUDA (and TensorRT where installed) on GPUs.

Config parameters (``parameters { key: ... value { string_value: ... } }``):
``intra_op_thread_count``, ``inter_op_thread_count`` (0 = ONNX Runtime's default),
``enable_tensorrt`` ("true" to put TensorRT before CUDA when it is installed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from accelserve.backends.base import Backend
from accelserve.config import count_parameter
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError
from accelserve.types import TensorSpec

_ONNX_TO_V2 = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}


class OnnxRuntimeBackend(Backend):
    default_filename = "model.onnx"

    def load(self, version_dir: Path, config: Any, device: Device) -> None:
        path = self.model_file(version_dir, config)
        filename = path.name
        params = {k: v.string_value for k, v in config.parameters.items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = count_parameter(
            f"model '{config.name}'", "intra_op_thread_count", params.get("intra_op_thread_count")
        )
        options.inter_op_num_threads = count_parameter(
            f"model '{config.name}'", "inter_op_thread_count", params.get("inter_op_thread_count")
        )
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=_providers(device, params)
            )
        except Exception as exc:  # ONNX Runtime raises its own exception types
            raise ConfigError(
                f"model '{config.name}' version {version_dir.name}: ONNX Runtime cannot load "
                f"'{filename}': {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        self.device = device
        # Its intra-op pool (more than one thread; 0 is one per core) spin-waits after each run.
        self.spins_after_call = options.intra_op_num_threads != 1
        self.inputs, batched_in = _specs(self.session.get_inputs())
        self.outputs, batched_out = _specs(self.session.get_outputs())
        if self.inputs and all(batched_in) and all(batched_out):
            self.inputs = [_drop_batch(s) for s in self.inputs]
            self.outputs = [_drop_batch(s) for s in self.outputs]
            self.max_batch_size = -1  # batches; the repository chooses the size
        else:
            self.max_batch_size = 0
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._run_options = ort.RunOptions()

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(self._output_names, inputs, self._run_options)
        except Exception as exc:
            raise ModelExecutionError(
                f"ONNX Runtime failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        return dict(zip(self._output_names, results, strict=True))

    def unload(self) -> None:
        self.session = None


def _providers(device: Device, params: dict[str, str]) -> list[Any]:
    if device.kind == "cpu":
        return ["CPUExecutionProvider"]
    if device.kind != "cuda":
        raise ConfigError(f"ONNX Runtime cannot run on {device}; use cpu or cuda:N")
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise ConfigError(
            f"ONNX Runtime here has no CUDA support (providers: {', '.join(available)}); "
            "install onnxruntime-gpu"
        )
    chosen: list[Any] = []
    if params.get("enable_tensorrt") == "true" and "TensorrtExecutionProvider" in available:
        chosen.append(("TensorrtExecutionProvider", {"device_id": device.index}))
    chosen.append(("CUDAExecutionProvider", {"device_id": device.index}))
    chosen.append("CPUExecutionProvider")
    return chosen


def _specs(args: list[Any]) -> tuple[list[TensorSpec], list[bool]]:
    specs, batched = [], []
    for arg in args:
        datatype = _ONNX_TO_V2.get(arg.type)
        if datatype is None:
            raise ConfigError(f"ONNX tensor '{arg.name}' has unsupported type {arg.type}")
        dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in arg.shape)
        specs.append(TensorSpec(arg.name, datatype, dims))
        batched.append(bool(arg.shape) and not isinstance(arg.shape[0], int))
    return specs, batched


def _drop_batch(spec: TensorSpec) -> TensorSpec:
    return TensorSpec(spec.name, spec.datatype, spec.dims[1:])


def _first_line(exc: BaseException) -> str:
    # ONNX Runtime messages can include file paths and C++ frames; keep the first line and
    # strip anything that looks like an absolute path.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return re.sub(r"(/[\w.\-]+)+", "<path>", text)[:500]
