"""Valid request inputs from a model's metadata and config: shapes, data, wire payloads.

Shapes given by the user (``--shape NAME:d1,d2``) and shapes in a data file exclude the batch
dimension, as in ``config.pbtxt``; the batch dimension is ``--batch-size`` when the model batches.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.types import CONFIG_TO_V2, V2_TO_NUMPY

_LETTERS = np.frombuffer(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ", "u1")


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    datatype: str  # V2 name
    dims: tuple[int, ...]  # without the batch dimension; -1 is variable
    optional: bool = False


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    max_batch_size: int  # 0: the model does not batch; -1: it batches, limit unknown
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]

    @classmethod
    def from_server(
        cls, metadata: Mapping[str, Any], config: Mapping[str, Any] | None
    ) -> ModelInfo:
        """Build from ``GET /v2/models/{m}`` and (when the server has it) ``.../config``.

        Without a config, a leading -1 on every input's shape is taken as the batch dimension
        (the V2 convention) and the batch limit is unknown (``max_batch_size`` -1: not checked).
        """
        name = str(metadata.get("name", ""))
        meta_inputs = metadata.get("inputs") or []
        if not meta_inputs:
            raise ValueError(f"model {name!r}: metadata lists no inputs")
        conf_inputs = {str(i.get("name")): i for i in (config or {}).get("input", [])}
        if config is not None and "max_batch_size" in config:
            max_batch = int(config["max_batch_size"])
        else:
            batched = all(int((i.get("shape") or [0])[0]) == -1 for i in meta_inputs)
            max_batch = -1 if batched else 0  # -1: batches, limit unknown
        specs = []
        for item in meta_inputs:
            iname = str(item["name"])
            shape = tuple(int(d) for d in item.get("shape", ()))
            conf = conf_inputs.get(iname)
            if conf is not None and "dims" in conf:
                dims = tuple(int(d) for d in conf["dims"])
            else:
                dims = shape[1:] if max_batch != 0 else shape
            datatype = str(item.get("datatype", ""))
            if not datatype and conf is not None:
                datatype = CONFIG_TO_V2.get(str(conf.get("data_type")), "")
            if datatype not in V2_TO_NUMPY:
                raise ValueError(
                    f"model {name!r} input {iname!r}: unsupported datatype {datatype!r}"
                )
            optional = bool(conf.get("optional", False)) if conf is not None else False
            specs.append(InputSpec(iname, datatype, dims, optional))
        outputs = tuple(str(o["name"]) for o in metadata.get("outputs", []))
        return cls(name, max_batch, tuple(specs), outputs)

    @property
    def batches(self) -> bool:
        return self.max_batch_size != 0


def parse_shape_option(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME:d1,d2`` -> (NAME, (d1, d2)); dims exclude the batch dimension."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name:
        raise ValueError(f"--shape {text!r}: expected NAME:d1,d2 (dims without the batch dim)")
    try:
        shape = tuple(int(d) for d in dims.split(",") if d.strip())
    except ValueError:
        raise ValueError(f"--shape {text!r}: dims must be integers, got {dims!r}") from None
    if any(d < 0 for d in shape):
        raise ValueError(f"--shape {text!r}: dims must be >= 0, got {list(shape)}")
    return name, shape


def resolve_shapes(
    info: ModelInfo, batch_size: int, overrides: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[int, ...]]:
    """Full request shape per input (batch dim included when the model batches).

    Optional inputs are sent only when named in ``overrides``. Variable dims (-1) must be fixed
    by ``overrides``; fixed dims must match.
    """
    overrides = dict(overrides or {})
    known = {i.name for i in info.inputs}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"--shape names unknown input(s) {unknown}; model inputs: {sorted(known)}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if not info.batches and batch_size != 1:
        raise ValueError(
            f"model {info.name!r} does not batch (max_batch_size 0): --batch-size must be 1, "
            f"got {batch_size}"
        )
    if info.max_batch_size > 0 and batch_size > info.max_batch_size:
        raise ValueError(
            f"--batch-size {batch_size} is above model {info.name!r} max_batch_size "
            f"{info.max_batch_size}"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in info.inputs:
        if spec.optional and spec.name not in overrides:
            continue
        dims = tuple(overrides.get(spec.name, spec.dims))
        if len(dims) != len(spec.dims):
            raise ValueError(
                f"--shape {spec.name}: model declares {len(spec.dims)} dims {list(spec.dims)}, "
                f"got {len(dims)} {list(dims)}"
            )
        for want, got in zip(spec.dims, dims, strict=True):
            if want >= 0 and got != want:
                raise ValueError(
                    f"--shape {spec.name}: model declares dims {list(spec.dims)}, got {list(dims)}"
                )
        if any(d < 0 for d in dims):
            raise ValueError(
                f"input {spec.name!r} has variable dims {list(spec.dims)}; give its shape with "
                f"--shape {spec.name}:" + ",".join("1" if d < 0 else str(d) for d in spec.dims)
            )
        shapes[spec.name] = (batch_size, *dims) if info.batches else dims
    return shapes


def _random_tensor(
    datatype: str, shape: tuple[int, ...], rng: np.random.Generator, string_length: int
) -> np.ndarray:
    if datatype == "BYTES":
        n = math.prod(shape)
        chars = _LETTERS[rng.integers(0, len(_LETTERS), size=(n, string_length))]
        out = np.empty(n, dtype=object)
        out[:] = [row.tobytes() for row in chars]
        return out.reshape(shape)
    dtype = V2_TO_NUMPY[datatype]
    if datatype == "BOOL":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        # Small values: sums and products of a few elements stay in range for every int type.
        return rng.integers(0, 64, size=shape).astype(dtype)
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype)


def _zeros_tensor(datatype: str, shape: tuple[int, ...], string_length: int) -> np.ndarray:
    if datatype == "BYTES":
        out = np.empty(math.prod(shape), dtype=object)
        out[:] = [b"0" * string_length] * out.size
        return out.reshape(shape)
    return np.zeros(shape, dtype=V2_TO_NUMPY[datatype])


def generate(
    info: ModelInfo,
    shapes: Mapping[str, tuple[int, ...]],
    mode: str = "random",
    *,
    sets: int = 16,
    seed: int = 0,
    string_length: int = 16,
) -> list[dict[str, np.ndarray]]:
    """``sets`` distinct input dicts (one for ``zeros``); BYTES elements are ASCII strings."""
    if mode not in ("random", "zeros"):
        raise ValueError(f"input data mode must be 'random' or 'zeros', got {mode!r}")
    if string_length < 0:
        raise ValueError(f"--string-length must be >= 0, got {string_length}")
    specs = {s.name: s for s in info.inputs}
    if mode == "zeros":
        return [{n: _zeros_tensor(specs[n].datatype, s, string_length) for n, s in shapes.items()}]
    rng = np.random.default_rng(seed)
    return [
        {n: _random_tensor(specs[n].datatype, s, rng, string_length) for n, s in shapes.items()}
        for _ in range(max(1, sets))
    ]


def load_json_data(
    path: str | Path, info: ModelInfo, shapes: Mapping[str, tuple[int, ...]]
) -> list[dict[str, np.ndarray]]:
    """Read perf_analyzer-style data: ``{"data": [{NAME: [flat values] | {"content": [...],
    "shape": [dims without batch]}}, ...]}`` (a bare list of entries also works).

    Each entry is one sample; when the model batches it is repeated ``--batch-size`` times.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--input-data {path}: cannot read JSON: {exc}") from None
    entries = doc.get("data") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'--input-data {path}: expected {{"data": [ {{input: values}}, ... ]}}')
    specs = {s.name: s for s in info.inputs}
    out = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"--input-data {path}: entry {k} is not an object")
        missing = sorted(set(shapes) - set(entry))
        if missing:
            raise ValueError(f"--input-data {path}: entry {k} lacks input(s) {missing}")
        tensors = {}
        for name, full_shape in shapes.items():
            value = entry[name]
            sample_shape = full_shape[1:] if info.batches else full_shape
            if isinstance(value, dict):
                content = value.get("content", [])
                if "shape" in value:
                    sample_shape = tuple(int(d) for d in value["shape"])
            else:
                content = value
            datatype = specs[name].datatype
            flat = np.asarray(
                [v.encode() if isinstance(v, str) else v for v in np.ravel(content).tolist()],
                dtype=object if datatype == "BYTES" else V2_TO_NUMPY[datatype],
            )
            if flat.size != math.prod(sample_shape):
                raise ValueError(
                    f"--input-data {path}: entry {k} input {name!r} has {flat.size} values, "
                    f"shape {list(sample_shape)} needs {math.prod(sample_shape)}"
                )
            sample = flat.reshape(sample_shape)
            if info.batches:
                sample = np.broadcast_to(sample, (full_shape[0], *sample_shape)).copy()
            tensors[name] = sample
        out.append(tensors)
    return out


def tensor_bytes(array: np.ndarray, datatype: str) -> bytes:
    """Raw little-endian bytes; BYTES elements each get a 4-byte little-endian length prefix."""
    if datatype == "BYTES":
        parts = []
        for item in array.ravel():
            b = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(b)))
            parts.append(b)
        return b"".join(parts)
    arr = np.ascontiguousarray(array, dtype=V2_TO_NUMPY[datatype])
    if sys.byteorder == "big" and arr.itemsize > 1:  # the wire is little-endian
        arr = arr.byteswap()
    return arr.tobytes()


def _json_data(array: np.ndarray, datatype: str) -> list[Any]:
    if datatype == "BYTES":
        return [b.decode("utf-8", "replace") for b in array.ravel()]
    if datatype in ("FP16", "BF16"):
        return array.astype(np.float32).ravel().tolist()
    return array.ravel().tolist()


def http_body(
    tensors: Mapping[str, np.ndarray], info: ModelInfo, binary: bool
) -> tuple[bytes, int | None]:
    """A V2 infer body and, for the binary extension, its JSON header length."""
    dtypes = {s.name: s.datatype for s in info.inputs}
    if not binary:
        inputs = [
            {
                "name": n,
                "shape": list(a.shape),
                "datatype": dtypes[n],
                "data": _json_data(a, dtypes[n]),
            }
            for n, a in tensors.items()
        ]
        return json.dumps({"inputs": inputs}, separators=(",", ":")).encode(), None
    blobs = [tensor_bytes(a, dtypes[n]) for n, a in tensors.items()]
    header = {
        "inputs": [
            {
                "name": n,
                "shape": list(a.shape),
                "datatype": dtypes[n],
                "parameters": {"binary_data_size": len(b)},
            }
            for (n, a), b in zip(tensors.items(), blobs, strict=True)
        ],
        "outputs": [{"name": o, "parameters": {"binary_data": True}} for o in info.outputs],
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + b"".join(blobs), len(head)
