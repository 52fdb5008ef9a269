"""PyTorch backend: ``model.pt2`` (a ``torch.export`` ExportedProgram) or ``model.pt``
(TorchScript), on ``cpu`` or ``cuda:N``.

Platforms: ``accelserve_torch_export`` (``model.pt2``), ``pytorch_libtorch`` / ``pytorch``
(``model.pt``, as in Triton). ``default_model_filename`` picks another file; its suffix decides
the format (``.pt2`` is an ExportedProgram, anything else TorchScript).

Names: an ExportedProgram's inputs are its ``forward`` arguments and, when it returns a dict, its
outputs are the dict's keys; the config may rename them positionally. TorchScript is positional
as in Triton: inputs are matched by ``forward`` argument name when the config uses those names,
by the ``__<index>`` suffix (``INPUT__0``) when every name has one, else in config order; outputs
take the config's names in order (``output__<i>`` when the config declares none).

Config parameters (names are case-insensitive, so Triton's ``INFERENCE_MODE`` works too):
``torch_compile`` ("true": wrap the program in ``torch.compile``; ``.pt2`` only),
``torch_compile_mode``, ``torch_compile_backend`` (passed to ``torch.compile``), ``autocast``
("fp16" | "bf16": run under ``torch.autocast``; outputs are cast back to their declared types),
``inference_mode`` ("true" by default; "false" uses ``no_grad``), ``intra_op_thread_count``
(``torch.set_num_threads``; process-wide, 0 keeps PyTorch's default).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch

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
from accelserve.protocol.model_config_pb2 import DataType, ModelConfig
from accelserve.types import CONFIG_TO_V2, TensorSpec, numpy_dtype

EXPORT_PLATFORM = "accelserve_torch_export"
SCRIPT_PLATFORMS = ("pytorch_libtorch", "pytorch")

_TORCH_TO_V2: dict[torch.dtype, str] = {
    torch.bool: "BOOL",
    torch.uint8: "UINT8",
    torch.int8: "INT8",
    torch.int16: "INT16",
    torch.int32: "INT32",
    torch.int64: "INT64",
    torch.float16: "FP16",
    torch.bfloat16: "BF16",
    torch.float32: "FP32",
    torch.float64: "FP64",
}
_V2_TO_TORCH = {v: k for k, v in _TORCH_TO_V2.items()}
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}
_INDEXED = re.compile(r"^.+__(\d+)$")


class TorchBackend(Backend):
    default_filename = "model.pt2"

    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
        self._where = f"model '{config.name}' version {version_dir.name}"
        params = {k.lower(): v.string_value for k, v in config.parameters.items()}
        path = _model_path(version_dir, config, self._where)
        self._torch_device = _torch_device(device, self._where)
        self.device = device
        threads = count_parameter(
            self._where, "intra_op_thread_count", params.get("intra_op_thread_count")
        )
        if threads > 0:
            torch.set_num_threads(threads)
        self._inference_mode = _bool_param(params, "inference_mode", True, self._where)
        autocast = params.get("autocast", "none").lower()
        if autocast not in (*_AUTOCAST, "none", ""):
            raise ConfigError(
                f"{self._where} parameter 'autocast': expected fp16, bf16 or none; "
                f"received {autocast!r}"
            )
        self._autocast = _AUTOCAST.get(autocast)
        self._config_outputs = [o.name for o in config.output]
        self._module: Any = None
        if path.suffix == ".pt2":
            self._load_export(path, config)
        else:
            self._load_script(path, config)
        self._call: Callable[..., Any] | None = self._module
        if _bool_param(params, "torch_compile", False, self._where):
            if path.suffix != ".pt2":
                raise ConfigError(
                    f"{self._where} parameter 'torch_compile': applies to torch.export programs "
                    f"(model.pt2); '{path.name}' is TorchScript, which is already compiled"
                )
            options: dict[str, Any] = {}
            if params.get("torch_compile_mode"):
                options["mode"] = params["torch_compile_mode"]
            if params.get("torch_compile_backend"):
                options["backend"] = params["torch_compile_backend"]
            self._call = torch.compile(self._module, **options)
        # Declared output dtypes, so autocast's half-precision results go back as declared.
        declared: list[str | None] = [s.datatype for s in self.outputs] or [
            _v2_of_config(o.data_type) for o in config.output
        ]
        self._out_dtypes = [_V2_TO_TORCH.get(d) if d else None for d in declared]

    def _load_export(self, path: Path, config: ModelConfig) -> None:
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise ConfigError(
                f"{self._where}: '{path.name}' is not a torch.export program "
                f"(torch.export.load: {type(exc).__name__}: {_first_line(exc)})"
            ) from None
        if self._torch_device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, self._torch_device)
        self._in_spec = program.call_spec.in_spec
        signature = program.graph_signature
        nodes = {n.name: n for n in program.graph.nodes}
        # A constant output (e.g. None) has no node: _set_specs refuses it by name.
        in_vals = [nodes[n].meta.get("val") if n in nodes else n for n in signature.user_inputs]
        out_vals = [nodes[n].meta.get("val") if n in nodes else n for n in signature.user_outputs]
        out_names = _dict_keys(program.call_spec.out_spec, len(out_vals)) or [
            f"output__{i}" for i in range(len(out_vals))
        ]
        self._input_names = _rename(list(signature.user_inputs), config.input, "input", self)
        self._output_names = _rename(out_names, config.output, "output", self)
        self._set_specs(config, in_vals, out_vals)
        self._module = program.module()

    def _set_specs(self, config: ModelConfig, in_vals: list[Any], out_vals: list[Any]) -> None:
        named = [
            *zip(self._input_names, in_vals, strict=True),
            *zip(self._output_names, out_vals, strict=True),
        ]
        for name, val in named:
            if not isinstance(val, torch.Tensor) or val.dtype not in _TORCH_TO_V2:
                raise ConfigError(
                    f"{self._where}: tensor '{name}' of the exported program is "
                    f"{getattr(val, 'dtype', type(val).__name__)}; accelserve serves tensors of "
                    f"{', '.join(str(d) for d in _TORCH_TO_V2)}"
                )
        fixed = [n for n, v in named if v.dim() == 0 or isinstance(v.shape[0], int)]
        batched = bool(named) and not fixed
        if config.max_batch_size > 0 and not batched:
            raise ConfigError(
                f"{self._where}: max_batch_size is {config.max_batch_size} but tensor "
                f"'{fixed[0] if fixed else '?'}' of the exported program has no dynamic first "
                "dimension; export with dynamic_shapes={...: {0: torch.export.Dim('batch')}} "
                "or set max_batch_size: 0"
            )
        # A config that declares a non-batching model is checked against the full shapes.
        strip = batched and not (config.max_batch_size == 0 and (config.input or config.output))
        self.max_batch_size = -1 if strip else 0
        specs = []
        for name, val in named:
            dims = tuple(d if isinstance(d, int) else -1 for d in val.shape)
            specs.append(TensorSpec(name, _TORCH_TO_V2[val.dtype], dims[1:] if strip else dims))
        self.inputs, self.outputs = specs[: len(in_vals)], specs[len(in_vals) :]

    def _load_script(self, path: Path, config: ModelConfig) -> None:
        try:
            # PyTorch deprecates TorchScript for authors; serving existing files stays supported.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self._module = torch.jit.load(str(path), map_location=self._torch_device)
        except Exception as exc:
            raise ConfigError(
                f"{self._where}: '{path.name}' is not a TorchScript module "
                f"(torch.jit.load: {type(exc).__name__}: {_first_line(exc)})"
            ) from None
        self._module.eval()
        self._in_spec = None
        arguments = self._module.forward.schema.arguments[1:]  # [0] is self
        forward_names = [a.name for a in arguments]
        required = sum(1 for a in arguments if not a.has_default_value())
        names = [i.name for i in config.input] or forward_names
        if not required <= len(names) <= len(forward_names):
            raise ConfigError(
                f"{self._where}: the config declares {len(names)} inputs ({', '.join(names)}); "
                f"forward takes {required} to {len(forward_names)} "
                f"({', '.join(forward_names)})"
            )
        self._input_names = _script_order(names, forward_names)
        self._output_names = self._config_outputs  # empty: named output__<i> at infer time

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._call is None:
            raise ServerFaultError(f"{self._where}: the model is unloaded")
        try:
            flat = [_to_torch(inputs[n], n, self._torch_device) for n in self._input_names]
        except KeyError as exc:
            raise ModelExecutionError(f"{self._where}: input {exc} is missing") from None
        if self._in_spec is not None:
            args, kwargs = _unflatten(flat, self._in_spec)
        else:
            args, kwargs = tuple(flat), {}
        grad = torch.inference_mode() if self._inference_mode else torch.no_grad()
        cast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self._autocast is not None:
            cast = torch.autocast(self._torch_device.type, dtype=self._autocast)
        try:
            with grad, cast:
                result = self._call(*args, **kwargs)
            tensors = _flatten_result(result)
        except ModelExecutionError:
            raise
        except Exception as exc:
            raise _run_error(exc, self._where) from None
        names = self._output_names or [f"output__{i}" for i in range(len(tensors))]
        if len(tensors) != len(names):
            raise ModelExecutionError(
                f"{self._where}: the model returned {len(tensors)} outputs; the config declares "
                f"{len(names)} ({', '.join(names)})"
            )
        outputs = {}
        for i, (name, tensor) in enumerate(zip(names, tensors, strict=True)):
            dtype = self._out_dtypes[i] if i < len(self._out_dtypes) else None
            outputs[name] = _to_numpy(tensor if dtype is None else tensor.to(dtype))
        return outputs

    def unload(self) -> None:
        self._module = self._call = None
        if getattr(self, "_torch_device", None) is not None and self._torch_device.type == "cuda":
            torch.cuda.empty_cache()

    def memory_bytes(self) -> int | None:
        module = getattr(self, "_module", None)
        if module is None:
            return None
        tensors = [*module.parameters(), *module.buffers()]
        return sum(t.numel() * t.element_size() for t in tensors)


def _model_path(version_dir: Path, config: ModelConfig, where: str) -> Path:
    platform = config.platform or config.backend
    if config.default_model_filename:
        filename = config.default_model_filename
    elif platform == EXPORT_PLATFORM:
        filename = "model.pt2"
    elif platform in SCRIPT_PLATFORMS:
        filename = "model.pt"
    else:  # platform chosen from the file present
        filename = "model.pt2" if (version_dir / "model.pt2").is_file() else "model.pt"
    path = version_dir / filename
    if not path.is_file():
        other = {"model.pt": "model.pt2", "model.pt2": "model.pt"}.get(filename)
        hint = ""
        if other and (version_dir / other).is_file():
            wanted = EXPORT_PLATFORM if other == "model.pt2" else "pytorch_libtorch"
            hint = f" ('{other}' is there: set platform: \"{wanted}\")"
        raise ConfigError(f"{where}: expected file '{filename}' is missing{hint}")
    return path


def _torch_device(device: Device, where: str) -> torch.device:
    if device.kind == "cpu":
        return torch.device("cpu")
    if device.kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if device.index >= count:
            raise ConfigError(
                f"{where}: device {device} is not available to PyTorch here; "
                f"it sees {count} CUDA device(s)"
            )
        return torch.device("cuda", device.index)
    raise ConfigError(f"{where}: the PyTorch backend runs on cpu or cuda:N; received {device}")


def _bool_param(params: dict[str, str], key: str, default: bool, where: str) -> bool:
    text = params.get(key)
    if text is None or text == "":
        return default
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.lower() not in value:
        raise ConfigError(f"{where} parameter '{key}': expected true or false; received {text!r}")
    return value[text.lower()]


def _v2_of_config(data_type: int) -> str | None:
    return CONFIG_TO_V2.get(DataType.Name(data_type))


def _rename(found: list[str], tensors: Any, kind: str, backend: TorchBackend) -> list[str]:
    """Names requests use for the program's tensors, in the program's order: the program's own
    when the config uses them (or declares none), else the config's, positionally."""
    declared = [t.name for t in tensors]
    if not declared or set(declared) == set(found):
        return found
    if len(declared) != len(found):
        raise ConfigError(
            f"{backend._where}: the config declares {len(declared)} {kind}s "
            f"({', '.join(declared)}); the exported program has {len(found)} "
            f"({', '.join(found)})"
        )
    return declared


def _script_order(names: list[str], forward_names: list[str]) -> list[str]:
    """Config input names in the order TorchScript's forward takes them."""
    if set(names) <= set(forward_names):
        return sorted(names, key=forward_names.index)
    indexed = [_INDEXED.match(n) for n in names]
    if all(indexed) and sorted(int(m.group(1)) for m in indexed if m) == list(range(len(names))):
        return sorted(names, key=lambda n: int(n.rsplit("__", 1)[1]))
    return names


def _dict_keys(spec: Any, count: int) -> list[str] | None:
    """The keys when the program returns a flat dict of ``count`` tensors with string keys."""
    if spec is None or spec.type is not dict or spec.num_leaves != count:
        return None
    keys = list(spec.context)
    return keys if len(keys) == count and all(isinstance(k, str) for k in keys) else None


def _unflatten(flat: list[torch.Tensor], spec: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    from torch.utils import _pytree

    args, kwargs = _pytree.tree_unflatten(flat, spec)
    return tuple(args), dict(kwargs)


def _flatten_result(result: Any) -> list[torch.Tensor]:
    items = list(result.values()) if isinstance(result, dict) else result
    if isinstance(items, torch.Tensor):
        items = [items]
    if not isinstance(items, list | tuple) or not all(isinstance(t, torch.Tensor) for t in items):
        raise ModelExecutionError(
            "the model must return a tensor, or a tuple, list or dict of tensors; "
            f"it returned {type(result).__name__}"
        )
    return list(items)


def _to_torch(array: np.ndarray, name: str, device: torch.device) -> torch.Tensor:
    if array.dtype == object:
        raise ModelExecutionError(f"input '{name}' is BYTES; PyTorch models take numeric tensors")
    if array.dtype == numpy_dtype("BF16"):
        tensor = torch.from_numpy(np.ascontiguousarray(array).view(np.int16)).view(torch.bfloat16)
    else:
        # torch.from_numpy warns on read-only arrays (decoded request buffers are read-only).
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    return tensor.to(device, non_blocking=True) if device.type != "cpu" else tensor


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


_INDEX_ERRORS = ("index out of range", "out of bounds")
# A CUDA device-side assert (an index out of range in a kernel) leaves the context unusable:
# the server's problem from then on, so it is never retried on other requests.
_SERVER_FAULTS = ("out of memory", "device-side assert", "cuda error")


def _run_error(exc: BaseException, where: str) -> AccelServeError:
    """PyTorch's error from a call as the project's: an index out of range is the input's
    fault (400); running out of memory or a broken CUDA context is the server's."""
    text = f"{type(exc).__name__}: {_first_line(exc)}"
    lower = text.lower()
    if isinstance(exc, MemoryError) or any(m in lower for m in _SERVER_FAULTS):
        return ServerFaultError(f"{where}: PyTorch failed: {text}")
    if isinstance(exc, IndexError) or any(m in lower for m in _INDEX_ERRORS):
        return ModelInputError(f"{where}: PyTorch refused the input data: {text}")
    return ModelExecutionError(f"{where}: PyTorch failed: {text}")


def _first_line(exc: BaseException) -> str:
    # Framework messages can carry file paths and C++ frames: keep the first line, hide paths.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return re.sub(r"(/[\w.\-]+)+", "<path>", text)[:500]
