"""Triton's model warm-up (``model_warmup`` in config.pbtxt): requests run on every instance of
a version before it reports ready, so the first client request does not pay for lazy
initialisation (graph optimisation, memory pools, JIT compilation).

Each sample names its inputs with a datatype, dims (without the batch dimension) and data:
``zero_data``, ``random_data`` or ``input_data_file`` (raw row-major bytes in the model
directory's ``warmup/`` folder; BYTES elements as 4-byte little-endian lengths then bytes);
``batch_size`` (a batching model's batch dimension, 1 by default) and ``count`` (runs, 1 by
default). Every input the model requires must be given. A sample that is malformed, or that
the model fails on, fails the load with a message naming the sample and the reason, and the
model stays UNAVAILABLE. Warm-up runs call the backend directly: they are not counted in the
model's statistics.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from accelserve.backends.base import Backend
from accelserve.config import input_specs
from accelserve.errors import AccelServeError, ConfigError
from accelserve.protocol.model_config_pb2 import DataType, ModelConfig, ModelWarmup
from accelserve.types import CONFIG_TO_V2, V2_TO_NUMPY

WARMUP_DIR = "warmup"
_LENGTH = struct.Struct("<I")


@dataclass(frozen=True)
class WarmupSample:
    name: str
    inputs: dict[str, np.ndarray]
    count: int


def warmup_samples(model_dir: Path, config: ModelConfig) -> list[WarmupSample]:
    """The config's samples as arrays, checked against the model's inputs (ConfigError)."""
    samples = []
    specs = {s.name: s for s in input_specs(config)}
    for index, warmup in enumerate(config.model_warmup):
        where = f"model '{config.name}' model_warmup '{warmup.name or index}'"
        batch = warmup.batch_size or 1
        if config.max_batch_size > 0 and batch > config.max_batch_size:
            raise ConfigError(
                f"{where} batch_size: expected at most max_batch_size {config.max_batch_size}; "
                f"received {batch}"
            )
        if config.max_batch_size == 0 and batch != 1:
            raise ConfigError(
                f"{where} batch_size: expected 1 (the model does not batch); received {batch}"
            )
        unknown = sorted(set(warmup.inputs) - set(specs))
        if unknown:
            raise ConfigError(
                f"{where}: input {', '.join(unknown)} is not an input of the model; expected "
                f"{', '.join(specs) or 'none'}"
            )
        missing = sorted(n for n, s in specs.items() if not s.optional and n not in warmup.inputs)
        if missing:
            raise ConfigError(f"{where}: expected data for input {', '.join(missing)}")
        inputs = {
            name: _array(where, model_dir, name, spec, specs[name].datatype, batch, config)
            for name, spec in warmup.inputs.items()
        }
        samples.append(WarmupSample(warmup.name or str(index), inputs, max(warmup.count, 1)))
    return samples


async def run_warmup(
    model: str, version: str, samples: Sequence[WarmupSample], backends: Sequence[Backend]
) -> None:
    """Run every sample ``count`` times on every instance; the first failure fails the load."""
    for sample in samples:
        for backend in backends:
            for _ in range(sample.count):
                try:
                    await asyncio.to_thread(backend.infer, dict(sample.inputs))
                except Exception as exc:  # a backend's own exception types too
                    reason = (
                        exc.message
                        if isinstance(exc, AccelServeError)
                        else f"{type(exc).__name__}: {str(exc)[:300]}"
                    )
                    raise ConfigError(
                        f"model '{model}' version {version}: warm-up sample '{sample.name}' "
                        f"failed: {reason}"
                    ) from None


def _array(
    where: str,
    model_dir: Path,
    name: str,
    spec: ModelWarmup.Input,
    declared: str,
    batch: int,
    config: ModelConfig,
) -> np.ndarray:
    datatype = CONFIG_TO_V2.get(DataType.Name(spec.data_type), "")
    if datatype != declared:
        raise ConfigError(
            f"{where} input '{name}' data_type: expected TYPE_{declared.replace('BYTES', 'STRING')}"
            f" (the model's); received {DataType.Name(spec.data_type)}"
        )
    if any(d < 0 for d in spec.dims):
        raise ConfigError(
            f"{where} input '{name}' dims: expected fixed sizes; received {list(spec.dims)}"
        )
    shape = ([batch] if config.max_batch_size > 0 else []) + list(spec.dims)
    count = int(np.prod(shape)) if shape else 1
    dtype = V2_TO_NUMPY[datatype]
    choice = spec.WhichOneof("input_data_type")
    if choice == "input_data_file":
        return _from_file(where, model_dir, name, spec.input_data_file, datatype, shape, count)
    if datatype == "BYTES":
        rng = np.random.default_rng(0)
        values = [
            str(int(v)).encode() if choice == "random_data" else b""
            for v in rng.integers(0, 100, count)
        ]
        array = np.empty(count, dtype=object)
        array[:] = values
        return array.reshape(shape)
    if choice == "random_data":
        rng = np.random.default_rng(0)
        if dtype.kind == "f":
            return rng.random(shape).astype(dtype)
        if dtype.kind == "b":
            return rng.integers(0, 2, shape).astype(dtype)
        return rng.integers(0, 100, shape).astype(dtype)
    return np.zeros(shape, dtype)  # zero_data, or no choice (Triton's default)


def _from_file(
    where: str,
    model_dir: Path,
    name: str,
    filename: str,
    datatype: str,
    shape: list[int],
    count: int,
) -> np.ndarray:
    relative = Path(filename)
    if relative.is_absolute() or ".." in relative.parts:
        raise ConfigError(
            f"{where} input '{name}' input_data_file: expected a file inside {WARMUP_DIR}/"
        )
    path = model_dir / WARMUP_DIR / relative
    try:
        data = path.read_bytes()
    except OSError:
        raise ConfigError(
            f"{where} input '{name}' input_data_file '{filename}': no such file in the model's "
            f"{WARMUP_DIR}/ folder"
        ) from None
    if datatype == "BYTES":
        return _bytes_elements(where, name, data, shape, count)
    dtype = V2_TO_NUMPY[datatype].newbyteorder("<")
    expected = count * dtype.itemsize
    if len(data) != expected:
        raise ConfigError(
            f"{where} input '{name}' input_data_file '{filename}': expected {expected} bytes "
            f"({count} {datatype} elements for shape {shape}); the file has {len(data)}"
        )
    return np.frombuffer(data, dtype).astype(dtype.newbyteorder("=")).reshape(shape)


def _bytes_elements(where: str, name: str, data: bytes, shape: list[int], count: int) -> np.ndarray:
    elements, pos = [], 0
    for _ in range(count):
        if pos + 4 > len(data):
            break
        (length,) = _LENGTH.unpack_from(data, pos)
        if pos + 4 + length > len(data):
            break
        elements.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    if len(elements) != count or pos != len(data):
        raise ConfigError(
            f"{where} input '{name}' input_data_file: expected {count} length-prefixed BYTES "
            f"elements for shape {shape} filling the file; read {len(elements)} of its "
            f"{len(data)} bytes' worth"
        )
    array = np.empty(count, dtype=object)
    array[:] = elements
    return array.reshape(shape)
