"""Backend boundary: a framework's error caused by the input data becomes ``ModelInputError``
(400, naming the input and value where the framework says), the server's own failures
``ServerFaultError``, anything else ``ModelExecutionError`` (real ONNX Runtime and PyTorch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from backend_helpers import config, version_dir

from accelserve.backends.onnxruntime import OnnxRuntimeBackend, run_error
from accelserve.devices import Device
from accelserve.errors import ModelExecutionError, ModelInputError, ServerFaultError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

CPU = Device("cpu", 0)
VOCAB = 10


@pytest.fixture(scope="module")
def embedding(tmp_path_factory: pytest.TempPathFactory) -> OnnxRuntimeBackend:
    """An embedding table lookup: ids [batch, tokens] -> Gather over a [VOCAB, 3] table."""
    table = np.arange(VOCAB * 3, dtype=np.float32).reshape(VOCAB, 3)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["vectors"], name="/embeddings/Gather")],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", "tokens", 3])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = version_dir(tmp_path_factory.mktemp("onnx"), "embedding")
    onnx.save(model, str(path / "model.onnx"))
    backend = OnnxRuntimeBackend()
    backend.load(path, config(name="embedding"), CPU)
    return backend


def test_onnx_index_out_of_range_names_the_input_and_value(embedding: OnnxRuntimeBackend) -> None:
    ids = np.array([[1, 2, 3], [4, 42, 5]], dtype=np.int64)
    with pytest.raises(ModelInputError) as info:
        embedding.infer({"ids": ids})
    assert str(info.value) == (
        "input 'ids' holds the value 42, outside the range -10..9 that the model's Gather node "
        "'/embeddings/Gather' accepts as an index"
    )
    good = embedding.infer({"ids": ids[:1]})["vectors"]
    np.testing.assert_array_equal(good[0, :, 0], [3, 6, 9])


def test_onnx_invalid_argument_without_an_index_is_still_the_inputs_fault(
    embedding: OnnxRuntimeBackend,
) -> None:
    with pytest.raises(ModelInputError, match=r"ONNX Runtime refused the input data: .*rank"):
        embedding.infer({"ids": np.zeros((2, 2, 2), dtype=np.int64)})


def test_onnx_other_failures_stay_the_servers() -> None:
    assert isinstance(
        run_error(RuntimeError("Failed to allocate memory for 8 GB"), {}), ServerFaultError
    )
    plain = run_error(RuntimeError("something broke in /opt/x/y.so"), {})
    assert type(plain) is ModelExecutionError and "/opt" not in str(plain)


def test_onnx_unloaded_session_is_a_server_fault(tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend()
    backend.session = None
    with pytest.raises(ServerFaultError, match="unloaded"):
        backend.infer({})


def test_torch_index_error_is_the_inputs_fault() -> None:
    torch = pytest.importorskip("torch")
    from accelserve.backends.torch import _run_error

    table = torch.nn.Embedding(VOCAB, 3)
    try:
        table(torch.tensor([[1, 42]]))
    except Exception as exc:  # the real exception PyTorch raises
        error = _run_error(exc, "model 'm' version 1")
    assert isinstance(error, ModelInputError)
    assert str(error) == (
        "model 'm' version 1: PyTorch refused the input data: IndexError: index out of range in self"
    )
    oom = _run_error(torch.cuda.OutOfMemoryError("CUDA out of memory."), "m")
    assert isinstance(oom, ServerFaultError)
