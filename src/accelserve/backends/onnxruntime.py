"""ONNX Runtime backend: CPU execution provider, CUDA (and TensorRT where installed) on GPUs.

Config parameters (``parameters { key: ... value { string_value: ... } }``):
``intra_op_thread_count``, ``inter_op_thread_count`` (0 = ONNX Runtime's default),
``enable_tensorrt`` ("true" to put TensorRT before CUDA when it is installed). On GPUs, Triton's
``optimization`` fields: the TensorRT execution accelerator with ``precision_mode`` FP16/INT8,
and ``cuda { graphs: true }`` (``gpu_providers``).

The CPU instances of one model file share its weights: the first reads the file's initializers
once (``onnx_initializers``, without the ``onnx`` package) and every session uses those buffers
in place (``SessionOptions.add_initializer``); the last ``unload`` frees them. Pre-packed copies stay per
session: ONNX Runtime's Python API has no ``PrepackedWeightsContainer``, and turning pre-packing
off to share them doubles a short request's latency.
"""

from __future__ import annotations

import contextlib
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort

from accelserve.backends.base import Backend
from accelserve.config import count_parameter
from accelserve.devices import Device
from accelserve.errors import (
    AccelServeError,
    ConfigError,
    ModelExecutionError,
    ModelInputError,
    ServerFaultError,
)
from accelserve.protocol.model_config_pb2 import ModelConfig
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

    def __init__(self) -> None:
        super().__init__()
        self._weights: _SharedWeights | None = None  # held until unload (after the last run)

    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
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
        # Shared weights pay from the second instance on (alone, a session frees the weights it
        # pre-packs); a CUDA session plans its weights on the GPU and would copy host buffers.
        instances = sum(group.count or 1 for group in config.instance_group)
        if device.kind == "cpu" and instances > 1:
            self._weights = _SharedWeights.acquire(path, self)
        try:
            if self._weights is not None:
                for name, value in self._weights.values.items():
                    options.add_initializer(name, value)
            self.session = ort.InferenceSession(
                str(path), options, providers=_providers(device, params, config)
            )
        except Exception as exc:  # ONNX Runtime raises its own exception types
            self.unload()
            raise ConfigError(
                f"model '{config.name}' version {version_dir.name}: ONNX Runtime cannot load "
                f"'{filename}': {type(exc).__name__}: {_first_line(exc)}"
            ) from None
        self.device = device
        # Its intra-op pool (more than one thread; 0 is one per core) spin-waits after each run.
        self.spins_after_call = options.intra_op_num_threads != 1
        self.inputs, batched_in = _specs(self.session.get_inputs())
        self.outputs, batched_out = _specs(self.session.get_outputs())
        # A config that declares a non-batching model is checked against the full shapes.
        whole = config.max_batch_size == 0 and bool(config.input or config.output)
        if self.inputs and all(batched_in) and all(batched_out) and not whole:
            self.inputs = [_drop_batch(s) for s in self.inputs]
            self.outputs = [_drop_batch(s) for s in self.outputs]
            self.max_batch_size = -1  # batches; the repository chooses the size
        else:
            self.max_batch_size = 0
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._run_options = ort.RunOptions()

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.session
        if session is None:
            raise ServerFaultError("ONNX Runtime: the model is unloaded")
        feed = {
            name: _as_onnx_text(name, a) if a.dtype == object else a for name, a in inputs.items()
        }
        try:
            results = session.run(self._output_names, feed, self._run_options)
        except Exception as exc:
            raise run_error(exc, inputs) from None
        return {
            name: _as_bytes(result) if result.dtype.kind in "OU" else result
            for name, result in zip(self._output_names, results, strict=True)
        }

    def unload(self) -> None:
        self.session = None
        if self._weights is not None:
            self._weights.release(self)
            self._weights = None

    def memory_bytes(self) -> int | None:
        """The shared weights' bytes, counted once: against the first instance still holding
        them (the others report 0); None where nothing is shared (one instance, CUDA)."""
        if self._weights is None:
            return None
        return self._weights.nbytes if self._weights.holders[0] is self else 0


@dataclass(eq=False)
class _SharedWeights:
    """One model file's initializers as OrtValues that its CPU sessions use in place."""

    key: tuple[str, int, int]  # (path, mtime_ns, size): a rewritten file is a new entry
    values: dict[str, Any] = field(default_factory=dict)  # name -> OrtValue (owns its array)
    nbytes: int = 0
    holders: list[OnnxRuntimeBackend] = field(default_factory=list)
    loaded: threading.Lock = field(default_factory=threading.Lock)
    ready: bool = False

    _cache: ClassVar[dict[tuple[str, int, int], _SharedWeights]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def acquire(cls, path: Path, holder: OnnxRuntimeBackend) -> _SharedWeights:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        with cls._lock:
            entry = cls._cache.setdefault(key, cls(key))
            entry.holders.append(holder)
        with entry.loaded:  # one reader per file; the other instances wait for it
            if not entry.ready:
                # unreadable here: nothing is shared and ONNX Runtime reports it when it loads
                with contextlib.suppress(Exception):
                    entry.values, entry.nbytes = _initializers(path)
                entry.ready = True
        return entry

    def release(self, holder: OnnxRuntimeBackend) -> None:
        with self._lock:
            self.holders.remove(holder)
            if not self.holders:
                del self._cache[self.key]


def _initializers(path: Path) -> tuple[dict[str, Any], int]:
    from accelserve.backends.onnx_initializers import read_initializers

    # Small tensors (shapes, scalars) are left to ONNX Runtime, which folds them into the
    # graph; plain numeric types only (no strings, no ml_dtypes).
    arrays = read_initializers(path, min_bytes=_MIN_SHARED_BYTES)
    values = {name: ort.OrtValue.ortvalue_from_numpy(a) for name, a in arrays.items()}
    return values, sum(a.nbytes for a in arrays.values())


_MIN_SHARED_BYTES = 128


def _providers(device: Device, params: dict[str, str], config: ModelConfig) -> list[Any]:
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
    return gpu_providers(device.index, params, config, available)


_TRT_PRECISIONS = {"FP32": {}, "FP16": {"trt_fp16_enable": True}, "INT8": {"trt_int8_enable": True}}


def gpu_providers(
    index: int, params: dict[str, str], config: ModelConfig, available: list[str]
) -> list[Any]:
    """The providers of a CUDA session, from Triton's config: ``optimization {
    execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" parameters {
    key: "precision_mode" value: "FP16" } } ] } }`` (or the ``enable_tensorrt`` parameter) puts
    TensorRT first where installed; ``optimization { cuda { graphs: true } }`` turns on the CUDA
    provider's graph capture (``enable_cuda_graph``: fixed shapes and addresses per run)."""
    where = f"model '{config.name}' optimization"
    chosen: list[Any] = []
    accelerators = config.optimization.execution_accelerators
    if accelerators.cpu_execution_accelerator:
        names = [a.name for a in accelerators.cpu_execution_accelerator]
        raise ConfigError(
            f"{where} cpu_execution_accelerator: none is supported by accelserve's ONNX Runtime "
            f"backend; received {names}"
        )
    tensorrt = params.get("enable_tensorrt") == "true"
    trt_options: dict[str, Any] = {"device_id": index}
    for accelerator in accelerators.gpu_execution_accelerator:
        if accelerator.name != "tensorrt":
            raise ConfigError(
                f"{where} gpu_execution_accelerator name: expected 'tensorrt'; "
                f"received {accelerator.name!r}"
            )
        tensorrt = True
        for key, value in accelerator.parameters.items():
            if key == "precision_mode":
                if value.upper() not in _TRT_PRECISIONS:
                    raise ConfigError(
                        f"{where} tensorrt precision_mode: expected FP32, FP16 or INT8; "
                        f"received {value!r}"
                    )
                trt_options.update(_TRT_PRECISIONS[value.upper()])
            elif key == "max_workspace_size_bytes":
                trt_options["trt_max_workspace_size"] = count_parameter(where, key, value)
            else:
                raise ConfigError(
                    f"{where} tensorrt parameter: expected precision_mode or "
                    f"max_workspace_size_bytes; received {key!r}"
                )
    if tensorrt and "TensorrtExecutionProvider" in available:
        chosen.append(("TensorrtExecutionProvider", trt_options))
    cuda_options: dict[str, Any] = {"device_id": index}
    if config.optimization.cuda.graphs:
        cuda_options["enable_cuda_graph"] = "1"
    chosen.append(("CUDAExecutionProvider", cuda_options))
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


def _as_onnx_text(name: str, array: np.ndarray) -> np.ndarray:
    """A BYTES tensor (object array of ``bytes``) as ONNX Runtime's strings: ``str`` objects.
    Given ``bytes`` it would store their repr (``"b'0'"``), which a Cast to numbers refuses."""
    flat = array.reshape(-1)
    text = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        if isinstance(item, str):
            text[i] = item
            continue
        try:
            text[i] = bytes(item).decode("utf-8")
        except (UnicodeDecodeError, TypeError, ValueError):
            raise ModelInputError(
                f"input '{name}': element {i} is not UTF-8 text, which an ONNX string tensor "
                f"holds (received {str(item)[:40]})"
            ) from None
    return text.reshape(array.shape)


def _as_bytes(array: np.ndarray) -> np.ndarray:
    """ONNX Runtime's string output (``str`` objects) as a BYTES tensor: UTF-8 ``bytes``."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape, dtype=object)
    for i, item in enumerate(flat):
        out[i] = item.encode("utf-8") if isinstance(item, str) else item
    return out.reshape(array.shape)


def _drop_batch(spec: TensorSpec) -> TensorSpec:
    return TensorSpec(spec.name, spec.datatype, spec.dims[1:])


# ONNX Runtime's status prefix, and the parts of a kernel's message worth keeping.
_STATUS_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : [A-Z_]+ : ")
_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)$")
_INDEX = re.compile(r"idx=(-?\d+) must be within the inclusive range \[(-?\d+),\s*(-?\d+)\]")
_OUT_OF_MEMORY = ("out of memory", "failed to allocate", "bad_alloc", "bad allocation")


def run_error(exc: BaseException, inputs: dict[str, np.ndarray]) -> AccelServeError:
    """ONNX Runtime's error from ``run`` as the project's: INVALID_ARGUMENT (a bad index, a
    shape the graph cannot take) is the input's fault, naming the input and value where the
    message lets us tell; running out of memory is the server's; anything else a failure."""
    text = _first_line(exc)
    cast = _text_cast_error(text, inputs)
    if cast is not None:
        return cast
    if type(exc).__name__ == "InvalidArgument":  # onnxruntime_pybind11_state.InvalidArgument
        # Node names look like paths ("/model/embeddings/Gather") but name no file: keep them.
        raw = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
        return ModelInputError(_input_message(_STATUS_PREFIX.sub("", raw), inputs))
    detail = _STATUS_PREFIX.sub("", text)
    if isinstance(exc, MemoryError) or any(m in text.lower() for m in _OUT_OF_MEMORY):
        return ServerFaultError(f"ONNX Runtime ran out of memory: {detail}")
    return ModelExecutionError(f"ONNX Runtime failed: {type(exc).__name__}: {text}")


def _text_cast_error(text: str, inputs: dict[str, np.ndarray]) -> ModelInputError | None:
    """A Cast node that fails on a string input's text (``stod``, ``stoi``...) failed on the
    client's data: name the first element that is no number."""
    node = _NODE.search(_STATUS_PREFIX.sub("", text))
    if node is None or node[1] != "Cast":
        return None
    for name, array in inputs.items():
        if array.dtype != object:
            continue
        for i, item in enumerate(array.reshape(-1)):
            value = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            try:
                float(value)
            except ValueError:
                return ModelInputError(
                    f"input '{name}': element {i} is '{value[:40]}', which the model's Cast "
                    f"node cannot read as a number ({node[3]})"
                )
    return None


def _input_message(detail: str, inputs: dict[str, np.ndarray]) -> str:
    node = _NODE.search(detail)
    where = f"the model's {node[1]} node '{node[2]}'" if node else "the model"
    reason = _hide_paths(node[3] if node else detail)
    index = _INDEX.search(reason)
    if index is None:
        return f"ONNX Runtime refused the input data: {where}: {reason}"
    value, low, high = (int(g) for g in index.groups())
    holders = [
        name
        for name, array in inputs.items()
        if array.dtype.kind in "iu" and array.size and bool((array == value).any())
    ]
    held = f"input '{holders[0]}' holds" if len(holders) == 1 else "an input holds"
    return (
        f"{held} the value {value}, outside the range {low}..{high} that {where} accepts "
        f"as an index"
    )


def _first_line(exc: BaseException) -> str:
    # ONNX Runtime messages can include file paths and C++ frames; keep the first line and
    # strip anything that looks like an absolute path.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return _hide_paths(text)[:500]


def _hide_paths(text: str) -> str:
    return re.sub(r"(/[\w.\-]+)+", "<path>", text)
