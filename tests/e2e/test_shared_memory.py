"""Triton's system shared-memory extension through the real server, with tritonclient's own
helpers (tritonclient.utils.shared_memory): register, status, unregister over HTTP and gRPC,
inputs and outputs in regions, and every bad reference a clear 400 / INVALID_ARGUMENT while the
server keeps serving."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import (
    InferenceServerException,
    serialize_byte_tensor,
    serialized_byte_size,
)

from tests.conftest import ServerProcess, copy_example
from tests.e2e.test_onnx_strings import build_string_cast

BYTES = 16 * 4  # one INT32[1, 16] tensor


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("shm") / "models"
    copy_example("simple", root)
    build_string_cast(root)
    process = ServerProcess(root)
    yield process
    process.stop()


@pytest.fixture()
def regions() -> Iterator[list[shm.SharedMemoryRegion]]:
    """Regions the test creates (unique keys per test process), destroyed after it."""
    created: list[shm.SharedMemoryRegion] = []
    yield created
    for handle in created:
        shm.destroy_shared_memory_region(handle)


def region(created: list, name: str, size: int) -> shm.SharedMemoryRegion:
    handle = shm.create_shared_memory_region(name, f"/accelserve_{os.getpid()}_{name}", size)
    created.append(handle)
    return handle


def key(name: str) -> str:
    return f"/accelserve_{os.getpid()}_{name}"


A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.full((1, 16), 3, dtype=np.int32)


@pytest.fixture()
def http(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.url)
    yield client
    client.unregister_system_shared_memory()


@pytest.fixture()
def grpc(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.unregister_system_shared_memory()


def _inputs(module: object, offset_b: int = BYTES) -> list:
    inputs = [
        module.InferInput("INPUT0", [1, 16], "INT32"),
        module.InferInput("INPUT1", [1, 16], "INT32"),
    ]  # type: ignore[attr-defined]
    inputs[0].set_shared_memory("input_data", BYTES)
    inputs[1].set_shared_memory("input_data", BYTES, offset=offset_b)
    return inputs


def _outputs(module: object, both_in_shm: bool = True) -> list:
    out0 = module.InferRequestedOutput("OUTPUT0")  # type: ignore[attr-defined]
    out0.set_shared_memory("output_data", BYTES)
    out1 = module.InferRequestedOutput("OUTPUT1")  # type: ignore[attr-defined]
    if both_in_shm:
        out1.set_shared_memory("output_data", BYTES, offset=BYTES)
    return [out0, out1]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inputs_and_outputs_in_shared_memory(
    protocol: str, request: pytest.FixtureRequest, regions: list
) -> None:
    client = request.getfixturevalue(protocol)
    module = httpclient if protocol == "http" else grpcclient
    inputs_region = region(regions, "in", 2 * BYTES)
    outputs_region = region(regions, "out", 2 * BYTES)
    shm.set_shared_memory_region(inputs_region, [A, B])
    client.register_system_shared_memory("input_data", key("in"), 2 * BYTES)
    client.register_system_shared_memory("output_data", key("out"), 2 * BYTES)

    status = client.get_system_shared_memory_status()
    if protocol == "http":
        by_name = {r["name"]: r for r in status}
        assert by_name["input_data"] == {
            "name": "input_data",
            "key": key("in"),
            "offset": 0,
            "byte_size": 2 * BYTES,
        }
    else:
        assert status.regions["output_data"].key == key("out")
        assert status.regions["output_data"].byte_size == 2 * BYTES

    result = client.infer("simple", _inputs(module), outputs=_outputs(module))
    out0 = result.get_output("OUTPUT0")
    shape = out0["shape"] if protocol == "http" else list(out0.shape)
    assert shape == [1, 16]
    if protocol == "http":
        assert "data" not in out0
        assert out0["parameters"]["shared_memory_region"] == "output_data"
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(outputs_region, np.int32, [1, 16]), A + B
    )
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(outputs_region, np.int32, [1, 16], offset=BYTES), A - B
    )

    # New data in the same region: the server reads the region afresh on every request.
    shm.set_shared_memory_region(inputs_region, [B, A])
    client.infer("simple", _inputs(module), outputs=_outputs(module))
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(outputs_region, np.int32, [1, 16], offset=BYTES), B - A
    )

    client.unregister_system_shared_memory("input_data")
    remaining = client.get_system_shared_memory_status()
    names = [r["name"] for r in remaining] if protocol == "http" else list(remaining.regions)
    assert names == ["output_data"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_one_output_in_shared_memory_one_in_the_response(
    protocol: str, request: pytest.FixtureRequest, regions: list
) -> None:
    client = request.getfixturevalue(protocol)
    module = httpclient if protocol == "http" else grpcclient
    shm.set_shared_memory_region(region(regions, "in", 2 * BYTES), [A, B])
    outputs_region = region(regions, "out", BYTES)
    client.register_system_shared_memory("input_data", key("in"), 2 * BYTES)
    client.register_system_shared_memory("output_data", key("out"), BYTES)
    result = client.infer("simple", _inputs(module), outputs=_outputs(module, both_in_shm=False))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
    np.testing.assert_array_equal(
        shm.get_contents_as_numpy(outputs_region, np.int32, [1, 16]), A + B
    )


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bytes_input_from_shared_memory(
    protocol: str, request: pytest.FixtureRequest, regions: list
) -> None:
    client = request.getfixturevalue(protocol)
    module = httpclient if protocol == "http" else grpcclient
    text = np.array([[b"1.5", b"-2", b"40"]], dtype=object)
    serialized = serialize_byte_tensor(text)
    size = serialized_byte_size(serialized)  # length prefixes included
    handle = region(regions, "text", size)
    shm.set_shared_memory_region(handle, [serialized])
    client.register_system_shared_memory("text", key("text"), size)
    tensor = module.InferInput("TEXT", [1, 3], "BYTES")
    tensor.set_shared_memory("text", size)
    result = client.infer("string_cast", [tensor], outputs=[module.InferRequestedOutput("NUMBER")])
    np.testing.assert_array_equal(result.as_numpy("NUMBER"), np.array([[1.5, -2, 40]], np.float32))


# ------------------------------------------------------------------------------- bad cases


def _http_error(call: object, *args: object, **kwargs: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


def test_unknown_region_is_a_400_and_the_server_keeps_serving(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient
) -> None:
    error = _http_error(http.infer, "simple", _inputs(httpclient))
    assert error.status() == "400"
    assert "shared memory region 'input_data' is not registered" in error.message()
    error = _http_error(grpc.infer, "simple", _inputs(grpcclient))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'input_data' is not registered" in error.message()
    # plain requests still work
    plain = [
        httpclient.InferInput("INPUT0", [1, 16], "INT32"),
        httpclient.InferInput("INPUT1", [1, 16], "INT32"),
    ]
    plain[0].set_data_from_numpy(A)
    plain[1].set_data_from_numpy(B)
    np.testing.assert_array_equal(http.infer("simple", plain).as_numpy("OUTPUT0"), A + B)


def test_offsets_and_sizes_outside_the_region_are_400s(
    http: httpclient.InferenceServerClient, grpc: grpcclient.InferenceServerClient, regions: list
) -> None:
    region(regions, "in", 2 * BYTES)
    http.register_system_shared_memory("input_data", key("in"), 2 * BYTES)
    # the second input starts past the end of the region
    error = _http_error(http.infer, "simple", _inputs(httpclient, offset_b=2 * BYTES))
    assert error.status() == "400"
    assert "offset 128 + byte size 64 = 192 runs past the end of region 'input_data'" in (
        error.message()
    )
    error = _http_error(grpc.infer, "simple", _inputs(grpcclient, offset_b=BYTES + 4))
    assert (
        error.status() == "StatusCode.INVALID_ARGUMENT" and "runs past the end" in error.message()
    )
    # a byte size that does not match the shape
    tensor = httpclient.InferInput("INPUT0", [1, 16], "INT32")
    tensor.set_shared_memory("input_data", BYTES - 4)
    other = httpclient.InferInput("INPUT1", [1, 16], "INT32")
    other.set_shared_memory("input_data", BYTES)
    error = _http_error(http.infer, "simple", [tensor, other])
    assert "input 'INPUT0' 'shared_memory_byte_size': expected 64 bytes" in error.message()
    # an output region too small for the result
    region(regions, "small", 8)
    http.register_system_shared_memory("small", key("small"), 8)
    out = httpclient.InferRequestedOutput("OUTPUT0")
    out.set_shared_memory("small", 8)
    error = _http_error(http.infer, "simple", _inputs(httpclient), outputs=[out])
    assert error.status() == "400"
    assert (
        "output 'OUTPUT0' 'shared_memory_byte_size': expected at least 64 bytes" in error.message()
    )


def test_register_errors(
    server: ServerProcess,
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    regions: list,
) -> None:
    error = _http_error(http.register_system_shared_memory, "r", "/accelserve_no_such_key", 64)
    assert error.status() == "400" and "key '/accelserve_no_such_key'" in error.message()
    error = _http_error(grpc.register_system_shared_memory, "r", "/accelserve_no_such_key", 64)
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    error = _http_error(http.register_system_shared_memory, "r", "/../etc/passwd", 64)
    assert "one path component" in error.message()
    region(regions, "in", BYTES)
    error = _http_error(http.register_system_shared_memory, "r", key("in"), BYTES, offset=8)
    assert "offset 8 + byte_size 64 = 72 runs past the end" in error.message()
    http.register_system_shared_memory("r", key("in"), BYTES)
    error = _http_error(grpc.register_system_shared_memory, "r", key("in"), BYTES)
    assert "'r' is already registered" in error.message()
    error = _http_error(http.get_system_shared_memory_status, "nope")
    assert error.status() == "400" and "'nope' is not registered" in error.message()
    # a malformed body, straight over HTTP
    url = f"{server.base}/v2/systemsharedmemory/region/x/register"
    response = httpx.post(url, json={"key": key("in"), "byte_size": "64"})
    assert response.status_code == 400
    assert (
        "'byte_size': expected a non-negative integer; received a string"
        in response.json()["error"]
    )
    response = httpx.get(url)
    assert response.status_code == 405


def test_server_metadata_lists_the_extension(http: httpclient.InferenceServerClient) -> None:
    assert "system_shared_memory" in http.get_server_metadata()["extensions"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_one_input_in_shared_memory_one_in_the_request(
    protocol: str, request: pytest.FixtureRequest, regions: list
) -> None:
    # gRPC: the request's raw_input_contents then hold only INPUT1's bytes
    client = request.getfixturevalue(protocol)
    module = httpclient if protocol == "http" else grpcclient
    shm.set_shared_memory_region(region(regions, "in", BYTES), [A])
    client.register_system_shared_memory("input_data", key("in"), BYTES)
    inputs = [module.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in (0, 1)]
    inputs[0].set_shared_memory("input_data", BYTES)
    inputs[1].set_data_from_numpy(B)
    result = client.infer("simple", inputs)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)
