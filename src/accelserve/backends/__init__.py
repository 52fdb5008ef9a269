"""Framework backends: one file per framework, imported lazily through ``BACKENDS``.

A backend is selected from the model config's ``platform`` or ``backend`` field. Adding one is
one module plus one line in the table below.
"""

from __future__ import annotations

import importlib

from accelserve.backends.base import Backend
from accelserve.errors import ConfigError

# platform or backend name -> "module:class"
BACKENDS: dict[str, str] = {
    "onnxruntime_onnx": "accelserve.backends.onnxruntime:OnnxRuntimeBackend",
    "onnxruntime": "accelserve.backends.onnxruntime:OnnxRuntimeBackend",
    "pytorch_libtorch": "accelserve.backends.torch:TorchBackend",
    "pytorch": "accelserve.backends.torch:TorchBackend",
    "accelserve_torch_export": "accelserve.backends.torch:TorchBackend",
    "jax": "accelserve.backends.jax:JaxBackend",
    "tensorflow_savedmodel": "accelserve.backends.tensorflow:TensorFlowBackend",
    "tensorflow": "accelserve.backends.tensorflow:TensorFlowBackend",
    "accelserve_native": "accelserve.backends.native:NativeBackend",
    "python": "accelserve.backends.python:PythonBackend",
    "accelserve_tokenizer": "accelserve.backends.tokenizer:TokenizerBackend",
    "accelserve_embedding_head": "accelserve.backends.embedding_head:EmbeddingHeadBackend",
}

# Default model file name -> platform, for configs that name neither platform nor backend.
FILE_PLATFORMS: dict[str, str] = {
    "model.onnx": "onnxruntime_onnx",
    "model.pt2": "accelserve_torch_export",
    "model.pt": "pytorch_libtorch",
    "model.jax": "jax",
    "model.savedmodel": "tensorflow_savedmodel",
    "model.safetensors": "accelserve_native",
    "model.py": "python",
}


def backend_class(name: str) -> type[Backend]:
    try:
        target = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(f"platform/backend: expected one of {known}; received {name!r}") from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"backend {name!r} needs a package that is not installed ({exc.name}); "
            f"install the matching accelserve extra"
        ) from exc
    cls: type[Backend] = getattr(module, class_name)
    return cls
