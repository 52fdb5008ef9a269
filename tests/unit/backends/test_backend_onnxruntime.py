"""ONNX Runtime backend: the CPU instances of one model file share its weights in place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accelserve.backends.onnxruntime import OnnxRuntimeBackend, _SharedWeights
from accelserve.devices import Device
from tests.unit.backends.backend_helpers import config, version_dir

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

CPU = Device("cpu", 0)
WIDTH = 4096


def write_model(root: Path, seed: int = 0) -> tuple[Path, np.ndarray, np.ndarray]:
    """Y = X @ W + B with an [8, WIDTH] W and a [WIDTH] bias B, batched."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, WIDTH)).astype(np.float32)
    b = rng.standard_normal(WIDTH).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"]),
            helper.make_node("Add", ["XW", "B"], ["Y"]),
        ],
        "affine",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", WIDTH])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = version_dir(root, "affine")
    onnx.save(model, str(path / "model.onnx"))
    return path, w, b


def instances(path: Path, count: int) -> list[OnnxRuntimeBackend]:
    cfg = config(f"instance_group [ {{ count: {count} kind: KIND_CPU }} ]", name="affine")
    backends = []
    for _ in range(count):
        backend = OnnxRuntimeBackend()
        backend.load(path, cfg, CPU)
        backends.append(backend)
    return backends


def test_instances_share_the_weights_in_place(tmp_path: Path) -> None:
    path, w, b = write_model(tmp_path)
    first, second = instances(path, 2)
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    outs = [backend.infer({"X": x})["Y"] for backend in (first, second)]
    np.testing.assert_allclose(outs[0], x @ w + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(outs[0], outs[1])

    # Both sessions read the one buffer: a change to it shows in both (B has no packed copy).
    assert first._weights is second._weights is not None
    first._weights.values["B"].numpy()[:] += 1.0
    for backend in (first, second):
        np.testing.assert_allclose(
            backend.infer({"X": x})["Y"], outs[0] + 1.0, rtol=1e-5, atol=1e-5
        )
    first._weights.values["B"].numpy()[:] -= 1.0
    for backend in (first, second):
        backend.unload()


def test_shared_bytes_count_once_and_outlive_the_first_unload(tmp_path: Path) -> None:
    path, w, b = write_model(tmp_path)
    first, second = instances(path, 2)
    assert [first.memory_bytes(), second.memory_bytes()] == [w.nbytes + b.nbytes, 0]
    x = np.ones((2, 8), np.float32)
    want = second.infer({"X": x})["Y"]

    first.unload()
    assert first.memory_bytes() is None
    assert second.memory_bytes() == w.nbytes + b.nbytes  # now the one holder
    np.testing.assert_array_equal(second.infer({"X": x})["Y"], want)
    second.unload()
    assert second.memory_bytes() is None
    assert not _SharedWeights._cache  # the last unload frees them


def test_one_instance_keeps_its_own_weights(tmp_path: Path) -> None:
    # alone, a session frees the weights it pre-packs: holding a shared copy would cost more
    path, w, b = write_model(tmp_path)
    (only,) = instances(path, 1)
    assert only.memory_bytes() is None and not _SharedWeights._cache
    np.testing.assert_allclose(
        only.infer({"X": np.ones((1, 8), np.float32)})["Y"],
        (np.ones((1, 8)) @ w + b),
        rtol=1e-5,
        atol=1e-5,
    )
    only.unload()


def test_a_rewritten_file_is_not_served_stale_weights(tmp_path: Path) -> None:
    path, _, _ = write_model(tmp_path)
    old = instances(path, 2)  # still loaded while the file is rewritten (a reload)
    path, w, b = write_model(tmp_path, seed=1)
    new = instances(path, 2)
    assert new[0]._weights is not old[0]._weights
    x = np.ones((1, 8), np.float32)
    np.testing.assert_allclose(new[1].infer({"X": x})["Y"], x @ w + b, rtol=1e-5, atol=1e-5)
    for backend in (*old, *new):
        backend.unload()
    assert not _SharedWeights._cache
