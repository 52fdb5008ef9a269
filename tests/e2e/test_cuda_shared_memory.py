"""Triton's CUDA shared-memory extension through the real server, on what needs no GPU: every
bad register request is a clear 400 / INVALID_ARGUMENT naming its field, the CUDA regions share
one namespace with the system regions, unknown regions are errors for status and no-ops for
unregister (as in Triton), and a server without a GPU says registering needs one. Inference
through CUDA regions runs on a GPU only (tests/gpu/test_cuda_shared_memory_gpu.py)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import httpx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from accelserve.cuda_shared_memory import cuda_runtime
from tests.conftest import ServerProcess, copy_example

HANDLE = b"\1" * 64  # the size of a CUDA IPC handle; no process exported it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("cudashm") / "models"
    copy_example("simple", root)
    process = ServerProcess(root)
    yield process
    process.stop()


@pytest.fixture()
def grpc(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.unregister_cuda_shared_memory()
    client.unregister_system_shared_memory()


def _register(server: ServerProcess, name: str, body: object) -> httpx.Response:
    url = f"{server.base}/v2/cudasharedmemory/region/{name}/register"
    return httpx.post(url, json=body)


def _body(handle: bytes = HANDLE, device_id: object = 0, byte_size: object = 64) -> dict:
    return {
        "raw_handle": {"b64": base64.b64encode(handle).decode()},
        "device_id": device_id,
        "byte_size": byte_size,
    }


def _grpc_error(call: object, *args: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    return caught.value


@pytest.mark.parametrize("size", [0, 16, 63, 65])
def test_cuda_register_a_handle_not_64_bytes_is_a_400(
    server: ServerProcess, grpc: grpcclient.InferenceServerClient, size: int
) -> None:
    response = _register(server, "r", _body(b"\7" * size))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "'raw_handle'" in error and "64 bytes" in error and f"received {size} bytes" in error
    # tritonclient's gRPC client base64-decodes the handle it is given (get_raw_handle's form)
    message = _grpc_error(
        grpc.register_cuda_shared_memory, "r", base64.b64encode(b"\7" * size), 0, 64
    ).message()
    assert f"64 bytes (cudaIpcGetMemHandle's); received {size} bytes" in message


@pytest.mark.parametrize(
    ("raw_handle", "shown"),
    [(None, "nothing"), ("abc", "a string"), ({"b64": "@@not base64@@"}, "an object"), (7, "")],
)
def test_cuda_register_a_raw_handle_not_b64_is_a_400(
    server: ServerProcess, raw_handle: object, shown: str
) -> None:
    body = _body()
    if raw_handle is None:
        del body["raw_handle"]
    else:
        body["raw_handle"] = raw_handle
    response = _register(server, "r", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "'raw_handle': expected {\"b64\": <the base64 of a CUDA IPC memory handle>}" in error
    assert f"received {shown}" in error


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("byte_size", 0, "expected a positive integer; received 0"),
        ("byte_size", -4, "expected a non-negative integer; received an integer -4"),
        ("byte_size", "64", "expected a non-negative integer; received a string"),
        ("byte_size", None, "expected a non-negative integer; received nothing"),
        ("device_id", -1, "expected a non-negative integer; received an integer -1"),
        ("device_id", 1.5, "expected a non-negative integer; received a number 1.5"),
    ],
)
def test_cuda_register_bad_sizes_and_devices_are_400s(
    server: ServerProcess, field: str, value: object, expected: str
) -> None:
    body = _body()
    if value is None:
        del body[field]
    else:
        body[field] = value
    response = _register(server, "r", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert f"CUDA shared memory region 'r' '{field}': {expected}" in error


def test_cuda_register_over_grpc_checks_size_and_device(
    grpc: grpcclient.InferenceServerClient,
) -> None:
    encoded = base64.b64encode(HANDLE)
    message = _grpc_error(grpc.register_cuda_shared_memory, "r", encoded, 0, 0).message()
    assert "'byte_size': expected a positive integer; received 0" in message
    message = _grpc_error(grpc.register_cuda_shared_memory, "r", encoded, -2, 64).message()
    assert "'device_id': expected a non-negative integer; received -2" in message
    message = _grpc_error(grpc.register_cuda_shared_memory, "", encoded, 0, 64).message()
    assert "region name: expected a non-empty string" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "received null"),
        (b"[1, 2]", "received an array"),
        (b"{not json", "malformed JSON in request body"),
    ],
)
def test_cuda_register_a_body_not_an_object_is_a_400(
    server: ServerProcess, content: bytes, expected: str
) -> None:
    url = f"{server.base}/v2/cudasharedmemory/region/r/register"
    response = httpx.post(url, content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert expected in error
    if content != b"{not json":
        assert "expected a JSON object with 'raw_handle', 'device_id' and 'byte_size'" in error


def test_cuda_name_taken_by_a_system_region_is_a_400(
    server: ServerProcess, grpc: grpcclient.InferenceServerClient
) -> None:
    key = f"/accelserve_{os.getpid()}_cudadup"
    handle = shm.create_shared_memory_region("dup", key, 64)
    try:
        grpc.register_system_shared_memory("dup", key, 64)
        response = _register(server, "dup", _body())
        assert response.status_code == 400
        assert "'dup' is already registered (system shared memory" in response.json()["error"]
        message = _grpc_error(
            grpc.register_cuda_shared_memory, "dup", base64.b64encode(HANDLE), 0, 64
        ).message()
        assert "already registered (system shared memory" in message
    finally:
        grpc.unregister_system_shared_memory("dup")
        shm.destroy_shared_memory_region(handle)


def test_cuda_status_of_an_unknown_region_is_a_400_and_unregister_a_no_op(
    server: ServerProcess, grpc: grpcclient.InferenceServerClient
) -> None:
    response = httpx.get(f"{server.base}/v2/cudasharedmemory/region/nowhere/status")
    assert response.status_code == 400
    expected = "Unable to find CUDA shared memory region: 'nowhere' is not registered"
    assert expected in response.json()["error"]
    assert expected in _grpc_error(grpc.get_cuda_shared_memory_status, "nowhere").message()
    # Triton answers success to unregistering a name it does not hold, and so to clean-ups
    for path in ("region/nowhere/unregister", "unregister"):
        response = httpx.post(f"{server.base}/v2/cudasharedmemory/{path}")
        assert (response.status_code, response.json()) == (200, {})
    grpc.unregister_cuda_shared_memory("nowhere")


@pytest.mark.skipif(cuda_runtime() is not None, reason="this host has a GPU and CuPy")
def test_cuda_register_without_a_gpu_says_it_needs_one(
    server: ServerProcess, grpc: grpcclient.InferenceServerClient
) -> None:
    response = _register(server, "gpu", _body(device_id=3))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "CUDA shared memory region 'gpu': CUDA shared memory needs a GPU on the server" in error
    message = _grpc_error(
        grpc.register_cuda_shared_memory, "gpu", base64.b64encode(HANDLE), 0, 64
    ).message()
    assert "needs a GPU on the server" in message
    assert httpx.get(f"{server.base}/v2/cudasharedmemory/status").json() == []
    assert len(grpc.get_cuda_shared_memory_status().regions) == 0
    # and the server keeps serving
    assert httpclient.InferenceServerClient(server.url).is_model_ready("simple")


@pytest.mark.skipif(cuda_runtime() is None, reason="needs a GPU and CuPy on this host")
def test_cuda_register_a_device_the_server_lacks_is_a_400(server: ServerProcess) -> None:
    response = _register(server, "gpu", _body(device_id=1_000))
    assert response.status_code == 400
    assert "'device_id': expected a GPU of this server" in response.json()["error"]
    response = _register(server, "gpu", _body())  # a handle no process exported
    assert response.status_code == 400
    assert "Unable to open CUDA shared memory region 'gpu' on device 0" in response.json()["error"]
