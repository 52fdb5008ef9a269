"""``triton_python_backend_utils``: Triton's Python-backend API, as models import it.

Inside a Triton-style model's worker process this module is importable under its own top-level
name (``import triton_python_backend_utils as pb_utils``); the worker (``worker.py``) installs it
there and connects it to the server through ``_RUNTIME``. Written from python_backend's public
README: names, arguments and semantics follow it.

Custom metrics (``MetricFamily``/``Metric``, counters and gauges) report every change to the
server, which exports them on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_START = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END = 2
TRITONSERVER_REQUEST_RELEASE_ALL = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE = 2

# Triton's DataType enum (model_config.proto) <-> NumPy.
_TYPES: dict[int, Any] = {
    1: np.bool_,
    2: np.uint8,
    3: np.uint16,
    4: np.uint32,
    5: np.uint64,
    6: np.int8,
    7: np.int16,
    8: np.int32,
    9: np.int64,
    10: np.float16,
    11: np.float32,
    12: np.float64,
    13: np.object_,
}
_NAMES = {
    "TYPE_BOOL": 1,
    "TYPE_UINT8": 2,
    "TYPE_UINT16": 3,
    "TYPE_UINT32": 4,
    "TYPE_UINT64": 5,
    "TYPE_INT8": 6,
    "TYPE_INT16": 7,
    "TYPE_INT32": 8,
    "TYPE_INT64": 9,
    "TYPE_FP16": 10,
    "TYPE_FP32": 11,
    "TYPE_FP64": 12,
    "TYPE_STRING": 13,
    "TYPE_BF16": 14,
}


class Runtime(Protocol):
    """What the worker provides to this module: responses out, calls to other models."""

    def send(self, tag: int, response: InferenceResponse | None, flags: int) -> None: ...

    def call(self, request: InferenceRequest, decoupled: bool) -> Iterator[InferenceResponse]: ...

    def cancelled(self, tag: int) -> bool: ...

    def metric(self, family: MetricFamily, labels: dict[str, str], value: float) -> None: ...


_RUNTIME: Runtime | None = None


def triton_to_numpy_type(data_type: int) -> Any:
    return _TYPES.get(data_type)


def numpy_to_triton_type(data_type: Any) -> int | None:
    dtype = np.dtype(data_type)
    if dtype.kind in "OSU":
        return 13
    for number, candidate in _TYPES.items():
        if candidate is not np.object_ and np.dtype(candidate) == dtype:
            return number
    return None


def triton_string_to_numpy(triton_type_string: str) -> Any:
    return _TYPES.get(_NAMES.get(triton_type_string, 0))


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED = 0, 1, 2, 3, 4, 5
    ALREADY_EXISTS, CANCELLED = 6, 7

    def __init__(self, message: str, code: int = 1) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r})"


class TritonModelException(Exception):
    def message(self) -> str:
        return str(self)


class Tensor:
    def __init__(self, name: str, value: Any) -> None:
        array = np.asarray(value)
        if array.dtype.kind in "SU":
            array = array.astype(np.object_)
        self._name, self._array = name, array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array

    def is_cpu(self) -> bool:
        return True

    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    def triton_dtype(self) -> int | None:
        return numpy_to_triton_type(self._array.dtype)

    def to_dlpack(self) -> Any:
        return self._array.__dlpack__()

    @classmethod
    def from_dlpack(cls, name: str, capsule: Any) -> Tensor:
        # np.from_dlpack takes an object with __dlpack__ (a torch tensor, a jax array).
        return cls(name, np.from_dlpack(capsule))

    @classmethod
    def from_numpy(cls, name: str, value: Any) -> Tensor:
        return cls(name, value)


class InferenceResponse:
    def __init__(
        self,
        output_tensors: list[Tensor] | None = None,
        error: TritonError | None = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        self._outputs = list(output_tensors or [])
        self._error = error
        self._parameters = (
            parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        )

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


class InferenceResponseSender:
    def __init__(self, tag: int) -> None:
        self._tag = tag
        self._closed = False
        self._lock = threading.Lock()

    def send(self, response: InferenceResponse | None = None, flags: int = 0) -> None:
        with self._lock:
            if self._closed:
                raise TritonModelException(
                    "Unable to send response. Response sender has been closed: it already sent "
                    "the final flag (TRITONSERVER_RESPONSE_COMPLETE_FINAL)"
                )
            if response is not None and not isinstance(response, InferenceResponse):
                raise TritonModelException(
                    f"send() expects an InferenceResponse; received {type(response).__name__}"
                )
            if flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL:
                self._closed = True
        _runtime().send(self._tag, response, flags)

    def is_cancelled(self) -> bool:
        return _runtime().cancelled(self._tag)


class InferenceRequest:
    """A request ``execute`` receives, or one a model builds to call another model (BLS)."""

    def __init__(
        self,
        model_name: str = "",
        inputs: list[Tensor] | None = None,
        requested_output_names: list[str] | None = None,
        correlation_id: int | str = 0,
        request_id: str = "",
        model_version: int = -1,
        flags: int = 0,
        timeout: int = 0,
        preferred_memory: Any = None,
        trace: Any = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        self._model_name = model_name
        self._inputs = list(inputs or [])
        self._requested = list(requested_output_names or [])
        self._correlation_id = correlation_id
        self._request_id = request_id
        self._model_version = model_version
        self._flags = flags
        self._timeout = timeout
        self._parameters = (
            parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        )
        self._tag = -1  # set by the worker on requests it received
        self._sender: InferenceResponseSender | None = None

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def model_name(self) -> str:
        return self._model_name

    def model_version(self) -> int:
        return self._model_version

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return self._timeout

    def parameters(self) -> str:
        return self._parameters

    def is_cancelled(self) -> bool:
        return self._tag >= 0 and _runtime().cancelled(self._tag)

    def get_response_sender(self) -> InferenceResponseSender:
        if self._tag < 0:
            raise TritonModelException("only a request execute() received has a response sender")
        if self._sender is None:
            self._sender = InferenceResponseSender(self._tag)
        return self._sender

    def exec(self, decoupled: bool = False) -> Any:
        """Run this request on ``model_name``: wait for its InferenceResponse, or (decoupled)
        return an iterator over the responses, each as the called model sends it."""
        responses = _runtime().call(self, decoupled)
        if decoupled:
            return responses
        answers = list(responses)  # read to its end, so the call is complete
        return answers[0]

    async def async_exec(self, decoupled: bool = False) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.exec, decoupled)


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((i for i in model_config.get("input", []) if i.get("name") == name), None)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((o for o in model_config.get("output", []) if o.get("name") == name), None)


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


class ModelConfig:
    """``auto_complete_config``'s argument: the config as a dict, and its setters."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config

    def as_dict(self) -> dict[str, Any]:
        return self._config

    def max_batch_size(self) -> int:
        return int(self._config.get("max_batch_size", 0))

    def set_max_batch_size(self, max_batch_size: int) -> None:
        self._config["max_batch_size"] = int(max_batch_size)

    def set_dynamic_batching(self) -> None:
        self._config.setdefault("dynamic_batching", {})

    def set_model_transaction_policy(self, policy: dict[str, Any]) -> None:
        self._config["model_transaction_policy"] = dict(policy)

    def add_input(self, spec: dict[str, Any]) -> None:
        self._add("input", spec)

    def add_output(self, spec: dict[str, Any]) -> None:
        self._add("output", spec)

    def _add(self, kind: str, spec: dict[str, Any]) -> None:
        entries = self._config.setdefault(kind, [])
        if any(e.get("name") == spec.get("name") for e in entries):
            return  # declared in config.pbtxt already: the file wins, as in Triton
        entries.append(dict(spec))


class Logger:
    """python_backend's ``pb_utils.Logger``: lines go to the server's log (stderr)."""

    @staticmethod
    def log(message: str, level: int = 0) -> None:
        _emit(("INFO", "WARNING", "ERROR", "VERBOSE")[level % 4], message)

    @staticmethod
    def log_info(message: str) -> None:
        _emit("INFO", message)

    @staticmethod
    def log_warn(message: str) -> None:
        _emit("WARNING", message)

    @staticmethod
    def log_error(message: str) -> None:
        _emit("ERROR", message)

    @staticmethod
    def log_verbose(message: str) -> None:
        _emit("VERBOSE", message)


Logger.INFO, Logger.WARNING, Logger.ERROR, Logger.VERBOSE = 0, 1, 2, 3  # type: ignore[attr-defined]


def _emit(level: str, message: str) -> None:
    print(f"{level} [python model] {message}", file=sys.stderr, flush=True)


class MetricFamily:
    COUNTER, GAUGE, HISTOGRAM = 0, 1, 2

    def __init__(self, name: str, description: str, kind: int) -> None:
        if kind not in (MetricFamily.COUNTER, MetricFamily.GAUGE):
            raise TritonModelException(
                f"MetricFamily '{name}': kind must be MetricFamily.COUNTER or GAUGE (histograms "
                f"are not supported); received {kind!r}"
            )
        self.name, self.description, self.kind = name, description, kind

    def Metric(self, labels: dict[str, str] | None = None) -> Metric:
        return Metric(self, labels or {})


class Metric:
    """One labelled series of a family; each change is reported to the server's /metrics."""

    def __init__(self, family: MetricFamily, labels: dict[str, str]) -> None:
        self.family, self.labels = family, {str(k): str(v) for k, v in labels.items()}
        self._value = 0.0
        self._lock = threading.Lock()
        self._report()

    def increment(self, value: float) -> None:
        if self.family.kind == MetricFamily.COUNTER and value < 0:
            raise TritonModelException("a counter cannot be incremented by a negative value")
        with self._lock:
            self._value += value
            self._report()

    def set(self, value: float) -> None:
        if self.family.kind == MetricFamily.COUNTER:
            raise TritonModelException("a counter cannot be set; use increment()")
        with self._lock:
            self._value = float(value)
            self._report()

    def _report(self) -> None:
        if _RUNTIME is not None:
            _RUNTIME.metric(self.family, self.labels, self._value)

    def value(self) -> float:
        return self._value


def _runtime() -> Runtime:
    if _RUNTIME is None:
        raise TritonModelException("triton_python_backend_utils is not connected to a server")
    return _RUNTIME
