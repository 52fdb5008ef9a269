"""Reading an ONNX file's initializers without ``onnx``: the same arrays as ``onnx``'s reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accelserve.backends.onnx_initializers import read_initializers

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

DTYPES = [np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16, np.uint16]
DTYPES += [np.int32, np.uint32, np.int64, np.uint64, np.bool_]


def save(path: Path, tensors: list[TensorProto], **save_args: object) -> Path:
    """A model whose graph only lists ``tensors`` as initializers (and one Identity node)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["X"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
        tensors,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path), **save_args)
    return path


def expected(path: Path, min_bytes: int) -> dict[str, np.ndarray]:
    arrays = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    return {n: a for n, a in arrays.items() if a.nbytes >= min_bytes}


def assert_same(found: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(found) == sorted(want)
    for name, array in want.items():
        assert (found[name].dtype, found[name].shape) == (array.dtype, array.shape), name
        np.testing.assert_array_equal(found[name], array)
        assert found[name].flags.c_contiguous and found[name].flags.aligned
        assert found[name].flags.writeable


def test_raw_data_tensors_of_every_numeric_type(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = [
        numpy_helper.from_array((rng.standard_normal((3, 5, 7)) * 50).astype(dtype), f"t{i}")
        for i, dtype in enumerate(DTYPES)
    ]
    tensors.append(numpy_helper.from_array(np.float32(2.5), "scalar"))  # dims []
    path = save(tmp_path / "m.onnx", tensors)
    assert_same(read_initializers(path), expected(path, 0))


def test_small_tensors_and_typed_fields_are_left_to_onnx_runtime(tmp_path: Path) -> None:
    big = numpy_helper.from_array(np.arange(64, dtype=np.float32), "big")
    small = numpy_helper.from_array(np.arange(4, dtype=np.float32), "small")
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [64], np.ones(64).tolist())
    strings = helper.make_tensor("strings", TensorProto.STRING, [2], [b"a", b"b"])
    path = save(tmp_path / "m.onnx", [big, small, typed, strings])
    found = read_initializers(path, min_bytes=128)
    assert sorted(found) == ["big"]
    np.testing.assert_array_equal(found["big"], np.arange(64, dtype=np.float32))


def test_external_data_next_to_the_model(tmp_path: Path) -> None:
    tensors = [
        numpy_helper.from_array(np.arange(1000, dtype=np.float32).reshape(10, 100), "w"),
        numpy_helper.from_array(np.arange(300, dtype=np.int64), "ids"),
    ]
    path = save(
        tmp_path / "m.onnx",
        tensors,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert_same(read_initializers(path), expected(path, 0))


def test_external_data_outside_the_model_folder_is_not_read(tmp_path: Path) -> None:
    outside = tmp_path / "secret.bin"
    outside.write_bytes(np.arange(64, dtype=np.float32).tobytes())
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[64])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "256")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    (tmp_path / "model").mkdir()
    path = save(tmp_path / "model" / "m.onnx", [tensor])
    assert read_initializers(path) == {}


def test_a_truncated_file_is_an_error(tmp_path: Path) -> None:
    w = numpy_helper.from_array(np.arange(256, dtype=np.float32), "w")
    path = save(tmp_path / "m.onnx", [w])
    data = path.read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: data.index(np.float32(100).tobytes())])
    with pytest.raises(ValueError):
        read_initializers(cut)
