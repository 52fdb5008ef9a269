"""TensorFlow SavedModel backend: platform ``tensorflow_savedmodel``, as in Triton.

A version directory holds ``model.savedmodel/``, the directory ``tf.saved_model.save`` (or a
Keras 3 model's ``model.export``) writes; ``default_model_filename`` names another directory.
One signature of the SavedModel is served: its named inputs and outputs are the model's tensors,
its dtypes their datatypes (``tf.string`` is BYTES), and a leading ``None`` on every one of them
makes the model batch.

Placement: the instance's device as TensorFlow names it (``cpu`` -> ``/device:CPU:0``,
``cuda:N`` and ``/device:GPU:N`` -> ``/device:GPU:N``); the variables are restored there and every
call runs there. GPUs get memory growth before TensorFlow first touches them, so a model takes
what it uses rather than the whole card.

Config parameters (``parameters { key: ... value { string_value: ... } }``):
``signature_name`` (default ``serving_default``), ``intra_op_thread_count`` and
``inter_op_thread_count`` (0 = TensorFlow's default; process-wide, fixed by the first TensorFlow
model loaded), ``jit_compile`` ("true": compile the signature with XLA, once per input shape).

TensorFlow is imported when the first such model loads, never when this module is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.backends.base import Backend
from accelserve.config import count_parameter
from accelserve.devices import Device
from accelserve.errors import (
    AccelServeError,
    ConfigError,
    DeviceError,
    ModelExecutionError,
    ModelInputError,
    ServerFaultError,
)
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.types import TensorSpec

PLATFORM = "tensorflow_savedmodel"
DEFAULT_SIGNATURE = "serving_default"

# tf.DType.name -> V2 datatype
_TF_TO_V2 = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "bfloat16": "BF16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}

log = logging.getLogger("accelserve.backends.tensorflow")
_setup_lock = threading.Lock()
_tf_module: Any = None


class TensorFlowBackend(Backend):
    default_filename = "model.savedmodel"

    def __init__(self) -> None:
        super().__init__()
        self._fn: Any = None
        self._loaded: Any = None  # the restored object; it owns the signature's variables

    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
        where = self._where = f"model '{config.name}' version {version_dir.name}"
        dirname = config.default_model_filename or self.default_filename
        path = version_dir / dirname
        if not path.is_dir():
            raise ConfigError(
                f"{where}: expected the SavedModel directory '{dirname}' (what "
                "tf.saved_model.save writes); it is missing"
            )
        params = {k.lower(): v.string_value for k, v in config.parameters.items()}
        tf = self._tf = import_tensorflow()
        _set_threads(tf, where, params)
        self._tf_device = _placement(tf, device, where)
        try:
            with tf.device(self._tf_device):
                self._loaded = tf.saved_model.load(str(path))
        except Exception as exc:
            raise ConfigError(
                f"{where}: TensorFlow cannot load the SavedModel '{dirname}': "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from None
        signature = params.get("signature_name") or DEFAULT_SIGNATURE
        signatures = self._loaded.signatures
        if signature not in signatures:
            raise ConfigError(
                f"{where} parameter 'signature_name': expected one of the SavedModel's "
                f"signatures {sorted(signatures)}; received {signature!r}"
            )
        fn = signatures[signature]
        self.device = device
        self._set_specs(config, fn)
        if _flag(params, "jit_compile", where):
            fn = tf.function(_keywords(fn), jit_compile=True)
        self._fn = fn
        self._variable_bytes = sum(
            int(np.prod(v.shape)) * v.dtype.size for v in signatures[signature].variables
        )

    def _set_specs(self, config: ModelConfig, fn: Any) -> None:
        _, kwargs = fn.structured_input_signature
        inputs = _in_graph_order(kwargs, fn)
        outputs = fn.structured_outputs
        declared = {t.name: tuple(t.dims) for t in (*config.input, *config.output)}
        named = [*inputs.items(), *outputs.items()]
        shapes = {name: _shape(spec, name, declared, self._where) for name, spec in named}
        batched = bool(shapes) and all(s[:1] == (-1,) for s in shapes.values() if s is not None)
        # A config that declares a non-batching model is checked against the full shapes.
        strip = batched and not (config.max_batch_size == 0 and (config.input or config.output))
        self.max_batch_size = -1 if strip else 0
        specs = []
        for name, spec in named:
            datatype = _TF_TO_V2.get(spec.dtype.name)
            if datatype is None:
                raise ConfigError(
                    f"{self._where}: tensor '{name}' has dtype {spec.dtype.name}, which the V2 "
                    "protocol cannot carry"
                )
            dims = shapes[name]
            if dims is None:  # unknown rank: the config's declaration stands
                dims = declared[name]
            elif strip:
                dims = dims[1:]
            specs.append(TensorSpec(name, datatype, dims))
        self.inputs, self.outputs = specs[: len(inputs)], specs[len(inputs) :]
        self._input_names = list(inputs)
        self._output_names = list(outputs)

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._fn is None:
            raise ServerFaultError(f"{self._where}: the model is unloaded")
        tf = self._tf
        try:
            with tf.device(self._tf_device):
                feeds = {name: tf.convert_to_tensor(inputs[name]) for name in self._input_names}
                results = self._fn(**feeds)
            return {name: results[name].numpy() for name in self._output_names}
        except KeyError as exc:
            raise ModelExecutionError(f"{self._where}: input {exc} is missing") from None
        except tf.errors.InvalidArgumentError as exc:  # the request's values: a client error
            raise ModelInputError(
                f"{self._where}: TensorFlow rejected the input: {_first_line(exc)}"
            ) from None
        except tf.errors.ResourceExhaustedError as exc:  # out of memory: not a request's fault
            raise ServerFaultError(f"{self._where}: TensorFlow: {_first_line(exc)}") from None
        except AccelServeError:
            raise
        except Exception as exc:
            raise ModelExecutionError(
                f"{self._where}: TensorFlow failed: {type(exc).__name__}: {_first_line(exc)}"
            ) from None

    def unload(self) -> None:
        self._fn = self._loaded = None

    def memory_bytes(self) -> int | None:
        """The signature's variables (weights) this instance restored."""
        return self._variable_bytes if self._fn is not None else None


def import_tensorflow() -> Any:
    """Import TensorFlow once (this backend and ``accelserve.export`` both come here), and
    turn on memory growth on every GPU before anything initialises them (afterwards TensorFlow
    refuses the setting)."""
    global _tf_module
    with _setup_lock:
        if _tf_module is None:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # no INFO banners in the log
            # TensorFlow's TFLite converter imports jax when it is installed (for converting
            # jax functions, never used to serve): hide it during the import so a server pays
            # only for the frameworks its models use; a jax model imports it later as usual.
            hide_jax = "jax" not in sys.modules
            # Triton imported after TensorFlow aborts the process (their LLVMs register the
            # same options: "inconsistency in registered CommandLine options"); a torch model
            # or a kernel may import it later, so it goes first when it is installed (unless
            # the caller imported TensorFlow already: then importing it now would abort).
            first = not {"triton", "tensorflow"} & sys.modules.keys()
            if first and importlib.util.find_spec("triton") is not None:
                importlib.import_module("triton")
            if hide_jax:
                sys.modules["jax"] = None  # type: ignore[assignment]
            try:
                tf = importlib.import_module("tensorflow")
            except ImportError:
                raise ConfigError(
                    "platform 'tensorflow_savedmodel' needs TensorFlow, which is not installed; "
                    "install accelserve[tf] (tensorflow-cpu) or tensorflow"
                ) from None
            finally:
                if hide_jax:
                    sys.modules.pop("jax", None)
            for gpu in tf.config.list_physical_devices("GPU"):
                try:
                    tf.config.experimental.set_memory_growth(gpu, True)
                except RuntimeError:  # the process initialised the GPUs already
                    log.warning("TensorFlow GPUs already initialised: memory growth not set")
            _tf_module = tf
        return _tf_module


def _set_threads(tf: Any, where: str, params: dict[str, str]) -> None:
    threading_config = tf.config.threading
    for key, kind in (("intra_op_thread_count", "intra_op"), ("inter_op_thread_count", "inter_op")):
        wanted = count_parameter(where, key, params.get(key))
        if not wanted:
            continue
        current = getattr(threading_config, f"get_{kind}_parallelism_threads")()
        if current == wanted:
            continue
        try:
            getattr(threading_config, f"set_{kind}_parallelism_threads")(wanted)
        except RuntimeError:  # TensorFlow's runtime started: the setting is fixed for good
            log.warning(
                "%s parameter '%s': TensorFlow already runs with %d (set by the first "
                "TensorFlow model loaded); %d is ignored",
                where,
                key,
                current,
                wanted,
            )


def _placement(tf: Any, device: Device, where: str) -> str:
    if device.kind == "cpu":
        return "/device:CPU:0"  # TensorFlow has one host device; cpu:N are XLA's virtual ones
    if device.kind != "cuda":
        raise ConfigError(
            f"{where}: the TensorFlow backend runs on cpu or cuda:N (/device:GPU:N); received "
            f"{device} (serve TPU models with the jax backend)"
        )
    gpus = tf.config.list_physical_devices("GPU")
    if device.index >= len(gpus):
        raise DeviceError(
            f"{where}: device {device.tensorflow_name} is not visible to TensorFlow, which sees "
            f"{len(gpus)} GPU(s) here (tensorflow-cpu sees none; install tensorflow[and-cuda])"
        )
    return device.tensorflow_name


def _in_graph_order(kwargs: dict[str, Any], fn: Any) -> dict[str, Any]:
    """The signature's inputs in the order the function's graph declares them (a Keras model's
    input order), rather than the sorted order of ``structured_input_signature``."""
    order = {t.name.split(":")[0]: i for i, t in enumerate(fn.inputs)}
    ranked = sorted(kwargs.items(), key=lambda item: order.get(item[1].name or item[0], len(order)))
    return dict(ranked)


def _shape(
    spec: Any, name: str, declared: dict[str, tuple[int, ...]], where: str
) -> tuple[int, ...] | None:
    if spec.shape.rank is None:
        if name not in declared:
            raise ConfigError(
                f"{where}: the SavedModel does not say the rank of tensor '{name}'; declare it "
                "in config.pbtxt with its dims"
            )
        return None
    return tuple(-1 if d is None else int(d) for d in spec.shape.as_list())


def _keywords(fn: Any) -> Any:
    def call(**feeds: Any) -> Any:
        return fn(**feeds)

    return call


def _flag(params: dict[str, str], key: str, where: str) -> bool:
    value = params.get(key, "").strip().lower()
    if value in ("", "false", "0", "no"):
        return False
    if value in ("true", "1", "yes"):
        return True
    raise ConfigError(f"{where} parameter '{key}': expected true or false; received {value!r}")


_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "[[", "defined at")


def _first_line(exc: BaseException) -> str:
    """TensorFlow's message without its graph-execution preamble, node lists or file paths."""
    text = getattr(exc, "message", None) or str(exc)
    lines = [ln.strip() for ln in text.strip().splitlines()]
    meaningful = [ln for ln in lines if ln and not ln.startswith(_NOISE)]
    line = meaningful[0] if meaningful else (lines[0] if lines else "")
    line = re.sub(r"\s*\[Op:[^\]]*\]\s*$", "", line)
    return re.sub(r"(?:/[\w.\-]+){2,}", "<path>", line)[:500]  # paths, not /device:GPU:0
