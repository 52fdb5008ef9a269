"""Tensor vocabulary: KServe V2 datatypes, their NumPy dtypes, and tensor specs.

The V2 protocol names datatypes ``FP32``, ``BYTES``...; Triton's ``config.pbtxt`` names the same
ones ``TYPE_FP32``, ``TYPE_STRING``... BYTES tensors are NumPy object arrays of ``bytes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np

# V2 datatype name -> NumPy dtype. BF16 comes from ml_dtypes (what JAX and ONNX Runtime use).
V2_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "BYTES": np.dtype(object),
}
NUMPY_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NUMPY.items()}
NUMPY_TO_V2[np.dtype("S")] = "BYTES"
NUMPY_TO_V2[np.dtype("U")] = "BYTES"

# Triton config enum name -> V2 name (TYPE_STRING is Triton's name for BYTES).
CONFIG_TO_V2: dict[str, str] = {f"TYPE_{k}": k for k in V2_TO_NUMPY if k != "BYTES"}
CONFIG_TO_V2["TYPE_STRING"] = "BYTES"
V2_TO_CONFIG: dict[str, str] = {v: k for k, v in CONFIG_TO_V2.items()}


def numpy_dtype(datatype: str) -> np.dtype:
    return V2_TO_NUMPY[datatype]


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 name of a NumPy dtype; raises KeyError for dtypes V2 cannot carry."""
    if dtype.kind in "SUO":
        return "BYTES"
    return NUMPY_TO_V2[np.dtype(dtype)]


def element_size(datatype: str) -> int:
    """Bytes per element for fixed-size datatypes (0 for BYTES)."""
    return 0 if datatype == "BYTES" else V2_TO_NUMPY[datatype].itemsize


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output, as the config declares it (dims exclude the batch dim)."""

    name: str
    datatype: str  # V2 name, e.g. "FP32"
    dims: tuple[int, ...]  # -1 means variable
    optional: bool = False
    reshape: tuple[int, ...] | None = None

    def as_metadata(self, max_batch_size: int) -> dict[str, object]:
        shape = [-1, *self.dims] if max_batch_size > 0 else list(self.dims)
        return {"name": self.name, "datatype": self.datatype, "shape": shape}


@dataclass(slots=True)
class InferRequest:
    """One inference request as the data plane sees it, whatever the wire format was.

    ``inputs`` holds NumPy arrays already decoded and checked against their declared datatype
    and shape; ``outputs`` names the outputs wanted (empty means all).
    """

    inputs: dict[str, np.ndarray]
    outputs: Sequence[str] = field(default_factory=list)
    id: str = ""
    priority: int = 0  # 0 means the model's default_priority_level
    timeout_us: int = 0  # 0 means the model's default
    parameters: dict[str, object] = field(default_factory=dict)


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    id: str = ""


@dataclass(slots=True)
class StreamResponse:
    """One response of a request's stream: a decoupled model sends zero, one or many per
    request, each with its outputs or an error, and marks the last one ``final`` (Triton's
    TRITONSERVER_RESPONSE_COMPLETE_FINAL); ``outputs`` None with no error is the final flag
    alone. A model that is not decoupled answers with one final response."""

    model_name: str
    model_version: str
    id: str
    outputs: dict[str, np.ndarray] | None
    final: bool
    error: Exception | None = None  # an AccelServeError with a client-safe message
