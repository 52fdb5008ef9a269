"""CUDA shared memory on a GPU, through the real server with tritonclient's own helpers
(tritonclient.utils.cuda_shared_memory): regions registered from their CUDA IPC handles over
HTTP and gRPC, inputs read from and outputs written into device memory, status and unregister,
and an out-of-range window a clear 400 while the server keeps serving. Skipped without a GPU,
CuPy (the server opens handles with it) or cuda-python (tritonclient's helpers need it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, copy_example

BYTES = 16 * 4  # one INT32[1, 16] tensor
A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


def _skip_reason() -> str | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return "needs a CUDA GPU (torch.cuda.is_available())"
    except ImportError:
        return "needs torch to see the GPU"
    try:
        import cupy  # noqa: F401  # the server opens the IPC handles with it
        import tritonclient.utils.cuda_shared_memory  # noqa: F401  # needs cuda-python
    except Exception as exc:  # ImportError, or tritonclient's own check for cuda-python
        return f"needs CuPy and tritonclient's CUDA helpers: {exc}"
    return None


_REASON = _skip_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_REASON is not None, reason=_REASON or "")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("cudashm_gpu") / "models"
    copy_example("simple", root)
    process = ServerProcess(root)
    yield process
    process.stop()


@pytest.fixture()
def cudashm() -> Iterator[Any]:
    import tritonclient.utils.cuda_shared_memory as module

    yield module
    for handle in list(module.allocated_shared_memory_regions()):
        module.destroy_shared_memory_region(handle)


@pytest.fixture(params=["http", "grpc"])
def client(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[Any]:
    if request.param == "http":
        client: Any = httpclient.InferenceServerClient(server.url)
    else:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.unregister_cuda_shared_memory()


def _module(client: Any) -> Any:
    return httpclient if isinstance(client, httpclient.InferenceServerClient) else grpcclient


def _regions(client: Any) -> dict[str, tuple[int, int]]:
    """name -> (device_id, byte_size), from either protocol's status."""
    status = client.get_cuda_shared_memory_status()
    if isinstance(status, list):  # HTTP: the JSON list
        return {r["name"]: (int(r["device_id"]), int(r["byte_size"])) for r in status}
    return {n: (int(r.device_id), int(r.byte_size)) for n, r in status.regions.items()}


def test_cuda_inputs_and_outputs_in_device_memory(client: Any, cudashm: Any) -> None:
    module = _module(client)
    inp = cudashm.create_shared_memory_region("cuda_in", 2 * BYTES, 0)
    out = cudashm.create_shared_memory_region("cuda_out", 2 * BYTES, 0)
    cudashm.set_shared_memory_region(inp, [A, B])
    client.register_cuda_shared_memory("cuda_in", cudashm.get_raw_handle(inp), 0, 2 * BYTES)
    client.register_cuda_shared_memory("cuda_out", cudashm.get_raw_handle(out), 0, 2 * BYTES)
    assert _regions(client) == {"cuda_in": (0, 2 * BYTES), "cuda_out": (0, 2 * BYTES)}

    inputs = [module.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in (0, 1)]
    inputs[0].set_shared_memory("cuda_in", BYTES)
    inputs[1].set_shared_memory("cuda_in", BYTES, offset=BYTES)
    outputs = [module.InferRequestedOutput(f"OUTPUT{i}") for i in (0, 1)]
    outputs[0].set_shared_memory("cuda_out", BYTES)
    outputs[1].set_shared_memory("cuda_out", BYTES, offset=BYTES)
    result = client.infer("simple", inputs, outputs=outputs)

    out0 = result.get_output("OUTPUT0")
    if module is httpclient:  # the data went to the region, not into the response
        assert "data" not in out0
        assert out0["parameters"]["shared_memory_region"] == "cuda_out"
    both = cudashm.get_contents_as_numpy(out, np.int32, [2, 16])
    np.testing.assert_array_equal(both[0:1], A + B)
    np.testing.assert_array_equal(both[1:2], A - B)

    # new data in the same device memory: the server reads the region afresh every request
    cudashm.set_shared_memory_region(inp, [B, A])
    client.infer("simple", inputs, outputs=outputs)
    both = cudashm.get_contents_as_numpy(out, np.int32, [2, 16])
    np.testing.assert_array_equal(both[1:2], B - A)

    client.unregister_cuda_shared_memory("cuda_in")
    assert list(_regions(client)) == ["cuda_out"]


def test_cuda_window_past_the_region_is_a_400_and_the_server_keeps_serving(
    client: Any, cudashm: Any
) -> None:
    module = _module(client)
    inp = cudashm.create_shared_memory_region("cuda_small", BYTES, 0)
    cudashm.set_shared_memory_region(inp, [A])
    client.register_cuda_shared_memory("cuda_small", cudashm.get_raw_handle(inp), 0, BYTES)
    inputs = [module.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in (0, 1)]
    inputs[0].set_shared_memory("cuda_small", BYTES)
    inputs[1].set_shared_memory("cuda_small", BYTES, offset=BYTES)  # past the end
    with pytest.raises(InferenceServerException) as caught:
        client.infer("simple", inputs)
    assert "runs past the end of region 'cuda_small', which has 64 bytes" in caught.value.message()
    inputs[1].set_data_from_numpy(B)  # the same request with INPUT1 in the body works
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), A + B)


def test_cuda_region_registered_twice_is_a_400(client: Any, cudashm: Any) -> None:
    handle = cudashm.create_shared_memory_region("cuda_twice", BYTES, 0)
    raw = cudashm.get_raw_handle(handle)
    client.register_cuda_shared_memory("cuda_twice", raw, 0, BYTES)
    with pytest.raises(InferenceServerException) as caught:
        client.register_cuda_shared_memory("cuda_twice", raw, 0, BYTES)
    assert "'cuda_twice' is already registered (CUDA shared memory, device 0)" in (
        caught.value.message()
    )
