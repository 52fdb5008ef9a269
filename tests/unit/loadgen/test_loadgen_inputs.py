"""Input generation from metadata/config: shapes, BYTES, dynamic dims, data files, encodings."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest

from accelserve.tools.bench.inputs import (
    InputSpec,
    ModelInfo,
    generate,
    http_body,
    load_json_data,
    parse_shape_option,
    resolve_shapes,
    tensor_bytes,
)

# What Triton 2.51 answers for its `simple` (trimmed): dims are ints in HTTP JSON.
TRITON_META = {
    "name": "simple",
    "versions": ["1"],
    "platform": "python",
    "inputs": [{"name": n, "datatype": "INT32", "shape": [-1, 16]} for n in ("INPUT0", "INPUT1")],
    "outputs": [
        {"name": n, "datatype": "INT32", "shape": [-1, 16]} for n in ("OUTPUT0", "OUTPUT1")
    ],
}
TRITON_CONFIG = {
    "name": "simple",
    "max_batch_size": 8,
    "input": [
        {"name": n, "data_type": "TYPE_INT32", "dims": [16], "optional": False}
        for n in ("INPUT0", "INPUT1")
    ],
}

# A text model: BYTES input with a variable dim, an optional mask, no batching.
TEXT_META = {
    "name": "text",
    "inputs": [
        {"name": "TEXT", "datatype": "BYTES", "shape": ["-1"]},  # gRPC form: int64 as str
        {"name": "MASK", "datatype": "BOOL", "shape": ["4"]},
    ],
    "outputs": [{"name": "EMB", "datatype": "FP32", "shape": ["-1", "8"]}],
}
TEXT_CONFIG = {
    "name": "text",
    "max_batch_size": 0,
    "input": [
        {"name": "TEXT", "data_type": "TYPE_STRING", "dims": ["-1"]},
        {"name": "MASK", "data_type": "TYPE_BOOL", "dims": ["4"], "optional": True},
    ],
}


def test_model_info_from_triton_json() -> None:
    info = ModelInfo.from_server(TRITON_META, TRITON_CONFIG)
    assert info.max_batch_size == 8 and info.batches
    assert info.inputs == (InputSpec("INPUT0", "INT32", (16,)), InputSpec("INPUT1", "INT32", (16,)))
    assert info.outputs == ("OUTPUT0", "OUTPUT1")


def test_model_info_grpc_strings_and_optional() -> None:
    info = ModelInfo.from_server(TEXT_META, TEXT_CONFIG)
    assert not info.batches
    assert info.inputs == (InputSpec("TEXT", "BYTES", (-1,)), InputSpec("MASK", "BOOL", (4,), True))


def test_model_info_without_config_takes_leading_minus_one_as_batch() -> None:
    info = ModelInfo.from_server(TRITON_META, None)
    assert info.max_batch_size == -1 and info.batches
    assert info.inputs[0].dims == (16,)
    # Batch limit unknown: not checked, the server will say.
    assert resolve_shapes(info, 64)["INPUT0"] == (64, 16)


def test_model_info_rejects_unknown_datatype() -> None:
    meta = {"name": "m", "inputs": [{"name": "X", "datatype": "FP8", "shape": [1]}]}
    with pytest.raises(ValueError, match="model 'm' input 'X': unsupported datatype 'FP8'"):
        ModelInfo.from_server(meta, None)


def test_resolve_shapes_batch_dim_and_limits() -> None:
    info = ModelInfo.from_server(TRITON_META, TRITON_CONFIG)
    assert resolve_shapes(info, 4) == {"INPUT0": (4, 16), "INPUT1": (4, 16)}
    with pytest.raises(ValueError, match="--batch-size 9 is above model 'simple' max_batch_size 8"):
        resolve_shapes(info, 9)
    with pytest.raises(ValueError, match=r"--shape INPUT0: model declares dims \[16\], got \[8\]"):
        resolve_shapes(info, 1, {"INPUT0": (8,)})
    with pytest.raises(ValueError, match=r"unknown input\(s\) \['NOPE'\]"):
        resolve_shapes(info, 1, {"NOPE": (1,)})
    with pytest.raises(ValueError, match="must be >= 1, got 0"):
        resolve_shapes(info, 0)


def test_resolve_shapes_dynamic_dims_need_a_shape() -> None:
    info = ModelInfo.from_server(TEXT_META, TEXT_CONFIG)
    with pytest.raises(ValueError, match=r"'TEXT' has variable dims \[-1\]; .*--shape TEXT:1"):
        resolve_shapes(info, 1)
    # Optional MASK left out unless named; no batch dim (max_batch_size 0).
    assert resolve_shapes(info, 1, {"TEXT": (3,)}) == {"TEXT": (3,)}
    assert resolve_shapes(info, 1, {"TEXT": (3,), "MASK": (4,)}) == {"TEXT": (3,), "MASK": (4,)}
    with pytest.raises(ValueError, match=r"does not batch .* --batch-size must be 1, got 2"):
        resolve_shapes(info, 2, {"TEXT": (3,)})
    with pytest.raises(ValueError, match="declares 1 dims"):
        resolve_shapes(info, 1, {"TEXT": (3, 2)})


def test_parse_shape_option() -> None:
    assert parse_shape_option("INPUT0:16") == ("INPUT0", (16,))
    assert parse_shape_option("a:b:2,3") == ("a:b", (2, 3))  # names may contain colons
    assert parse_shape_option("SCALAR:") == ("SCALAR", ())
    for bad in ("16", ":16", "X:1,a", "X:-1"):
        with pytest.raises(ValueError, match="--shape"):
            parse_shape_option(bad)


def test_generate_random_is_valid_distinct_and_seeded() -> None:
    info = ModelInfo.from_server(TRITON_META, TRITON_CONFIG)
    shapes = resolve_shapes(info, 2)
    sets = generate(info, shapes, "random", sets=4, seed=7)
    assert len(sets) == 4
    for t in sets:
        assert t["INPUT0"].dtype == np.int32 and t["INPUT0"].shape == (2, 16)
        assert t["INPUT0"].min() >= 0 and t["INPUT0"].max() < 64
    assert not np.array_equal(sets[0]["INPUT0"], sets[1]["INPUT0"])
    again = generate(info, shapes, "random", sets=4, seed=7)
    assert all(np.array_equal(a["INPUT1"], b["INPUT1"]) for a, b in zip(sets, again, strict=True))


def test_generate_bytes_and_zeros() -> None:
    info = ModelInfo.from_server(TEXT_META, TEXT_CONFIG)
    shapes = resolve_shapes(info, 1, {"TEXT": (3,), "MASK": (4,)})
    (t,) = generate(info, shapes, "random", sets=1, string_length=5)
    assert t["TEXT"].dtype == object and t["TEXT"].shape == (3,)
    assert all(isinstance(s, bytes) and len(s) == 5 and s.isascii() for s in t["TEXT"])
    assert t["MASK"].dtype == np.bool_
    (z,) = generate(info, shapes, "zeros", string_length=2)
    assert list(z["TEXT"]) == [b"00"] * 3 and not z["MASK"].any()
    with pytest.raises(ValueError, match="'random' or 'zeros', got 'ones'"):
        generate(info, shapes, "ones")


@pytest.mark.parametrize("datatype", ["FP16", "BF16", "FP32", "UINT8", "INT64"])
def test_generate_numeric_dtypes(datatype: str) -> None:
    meta = {"name": "m", "inputs": [{"name": "X", "datatype": datatype, "shape": [-1, 3]}]}
    info = ModelInfo.from_server(meta, {"max_batch_size": 4})
    (t,) = generate(info, resolve_shapes(info, 2), sets=1)
    assert t["X"].shape == (2, 3)
    assert len(tensor_bytes(t["X"], datatype)) == 6 * t["X"].dtype.itemsize


def test_tensor_bytes_bytes_prefix_and_little_endian() -> None:
    strings = np.array([b"ab", b"", b"xyz"], dtype=object)
    assert tensor_bytes(strings, "BYTES") == (
        struct.pack("<I", 2) + b"ab" + struct.pack("<I", 0) + struct.pack("<I", 3) + b"xyz"
    )
    assert tensor_bytes(np.array([1, 256], np.int32), "INT32") == b"\x01\0\0\0\0\x01\0\0"
    bf = np.array([1.0], dtype=ml_dtypes.bfloat16)
    assert tensor_bytes(bf, "BF16") == b"\x80\x3f"


def test_http_body_binary_parses_back() -> None:
    info = ModelInfo.from_server(TEXT_META, TEXT_CONFIG)
    t = {"TEXT": np.array([b"hi", b"there"], dtype=object)}
    body, header_len = http_body(t, info, binary=True)
    header = json.loads(body[:header_len])
    (item,) = header["inputs"]
    assert item == {
        "name": "TEXT",
        "shape": [2],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": 4 + 2 + 4 + 5},
    }
    assert header["outputs"] == [{"name": "EMB", "parameters": {"binary_data": True}}]
    assert body[header_len:] == tensor_bytes(t["TEXT"], "BYTES")


def test_http_body_json() -> None:
    info = ModelInfo.from_server(TRITON_META, TRITON_CONFIG)
    t = {"INPUT0": np.arange(16, dtype=np.int32)[None], "INPUT1": np.ones((1, 16), np.int32)}
    body, header_len = http_body(t, info, binary=False)
    assert header_len is None
    doc = json.loads(body)
    assert doc["inputs"][0] == {
        "name": "INPUT0",
        "shape": [1, 16],
        "datatype": "INT32",
        "data": list(range(16)),
    }
    text = ModelInfo.from_server(TEXT_META, TEXT_CONFIG)
    body, _ = http_body({"TEXT": np.array([b"a b"], dtype=object)}, text, binary=False)
    assert json.loads(body)["inputs"][0]["data"] == ["a b"]


def test_load_json_data_repeats_samples_over_the_batch(tmp_path) -> None:
    info = ModelInfo.from_server(TRITON_META, TRITON_CONFIG)
    path = tmp_path / "data.json"
    path.write_text(
        json.dumps(
            {
                "data": [
                    {"INPUT0": list(range(16)), "INPUT1": {"content": [1] * 16, "shape": [16]}},
                    {"INPUT0": [[2] * 16], "INPUT1": [3] * 16},
                ]
            }
        )
    )
    sets = load_json_data(path, info, resolve_shapes(info, 3))
    assert len(sets) == 2
    assert sets[0]["INPUT0"].shape == (3, 16) and sets[0]["INPUT0"].dtype == np.int32
    assert (sets[0]["INPUT0"][2] == np.arange(16)).all() and (sets[1]["INPUT1"] == 3).all()


def test_load_json_data_bytes_and_errors(tmp_path) -> None:
    info = ModelInfo.from_server(TEXT_META, TEXT_CONFIG)
    shapes = resolve_shapes(info, 1, {"TEXT": (2,)})
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"TEXT": ["héllo", "world"]}]))
    (t,) = load_json_data(path, info, shapes)
    assert list(t["TEXT"]) == ["héllo".encode(), b"world"]
    path.write_text(json.dumps({"data": [{"TEXT": ["one"]}]}))
    with pytest.raises(ValueError, match=r"entry 0 input 'TEXT' has 1 values, shape \[2\] needs 2"):
        load_json_data(path, info, shapes)
    path.write_text(json.dumps({"data": [{"OTHER": [1]}]}))
    with pytest.raises(ValueError, match=r"entry 0 lacks input\(s\) \['TEXT'\]"):
        load_json_data(path, info, shapes)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read JSON"):
        load_json_data(path, info, shapes)
