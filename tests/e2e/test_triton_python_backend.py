"""Triton's Python-backend API through a real server: TritonPythonModel models built by the
tests (tests/e2e/triton_python_models.py), called with tritonclient over HTTP and gRPC (sync and
streaming) and with httpx on Triton's generate extension. One server for the whole module."""

from __future__ import annotations

import asyncio
import json
import queue
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess
from tests.e2e.triton_python_models import build_repository

A = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
B = np.array([0.5, 0.5, 1.0, -1.0], np.float32)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("triton_python") / "models")


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(repository)
    yield process
    process.stop()


@pytest.fixture()
def http(server: ServerProcess) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(server.url)


@pytest.fixture()
def grpc(server: ServerProcess) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")


def _inputs(module: Any, **arrays: np.ndarray) -> list[Any]:
    tensors = []
    for name, array in arrays.items():
        datatype = "BYTES" if array.dtype == object else _V2[array.dtype.name]
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


_V2 = {"float32": "FP32", "int32": "INT32"}


def _repeat_inputs(module: Any, n: int, delay: float = 0.0) -> list[Any]:
    return _inputs(
        module,
        IN=np.array([5, 6], np.int32),
        N=np.array([n], np.int32),
        DELAY=np.array([delay], np.float32),
    )


# -- ordinary models ------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["http", "grpc"])
def test_add_sub_over_http_and_grpc(client: str, request: pytest.FixtureRequest) -> None:
    module = httpclient if client == "http" else grpcclient
    result = request.getfixturevalue(client).infer("add_sub", _inputs(module, INPUT0=A, INPUT1=B))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def _custom_metrics(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    return {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith(("add_sub_requests{", "add_sub_last_batch{"))
    }


def test_custom_metrics_are_exported_on_metrics(
    http: httpclient.InferenceServerClient, server: ServerProcess
) -> None:
    key = 'add_sub_requests{model="add_sub"}'
    http.infer("add_sub", _inputs(httpclient, INPUT0=A, INPUT1=B))
    before = _custom_metrics(server)[key]
    for _ in range(3):
        http.infer("add_sub", _inputs(httpclient, INPUT0=A, INPUT1=B))
    after = _custom_metrics(server)
    assert after[key] == before + 3
    assert after['add_sub_last_batch{model="add_sub"}'] == 1.0
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics").text
    assert "# TYPE add_sub_requests counter" in text
    assert "# HELP add_sub_last_batch requests in the last execute()" in text


def test_initialize_gets_tritons_args_and_requests_their_fields(
    http: httpclient.InferenceServerClient, repository: Path
) -> None:
    result = http.infer(
        "args",
        _inputs(httpclient, IN=np.array([1], np.int32)),
        request_id="req-7",
        parameters={"temperature": 0.5, "mode": "fast"},
        outputs=[httpclient.InferRequestedOutput("ARGS")],
    )
    seen = json.loads(result.as_numpy("ARGS")[0])
    config = json.loads(seen["model_config"])
    assert config["name"] == "args" and config["backend"] == "python"
    assert seen["model_instance_kind"] == "CPU"
    assert seen["model_instance_name"] == "args_0"
    assert seen["model_instance_device_id"] == "0"
    assert Path(seen["model_repository"]) == (repository / "args").resolve()
    assert (seen["model_version"], seen["model_name"]) == ("1", "args")
    assert seen["request_id"] == "req-7"
    assert seen["parameters"] == {"temperature": 0.5, "mode": "fast"}
    assert seen["requested"] == ["ARGS"]
    assert seen["inputs"] == ["IN"]


def test_auto_complete_config_and_dynamic_batching(
    http: httpclient.InferenceServerClient, server: ServerProcess
) -> None:
    config = http.get_model_config("auto_batch")
    assert [i["name"] for i in config["input"]] == ["X"]
    assert [o["name"] for o in config["output"]] == ["Y", "COUNT"]
    xs = [np.full((1, 2), i, np.float32) for i in range(6)]

    def one(x: np.ndarray) -> tuple[np.ndarray, int]:
        client = httpclient.InferenceServerClient(server.url)
        result = client.infer("auto_batch", _inputs(httpclient, X=x))
        return result.as_numpy("Y"), int(result.as_numpy("COUNT")[0, 0])

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, xs))
    for x, (y, _) in zip(xs, results, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    # The first execute() waits a second: the others queue and share one execute() call.
    assert max(count for _, count in results) > 1


def test_own_python_style_keeps_working(http: httpclient.InferenceServerClient) -> None:
    result = http.infer("own_style", _inputs(httpclient, X=np.array([1.0, 2.0], np.float32)))
    np.testing.assert_array_equal(result.as_numpy("Y"), [2.0, 3.0])


def test_model_whose_initialize_raises_is_unavailable_with_the_reason(
    http: httpclient.InferenceServerClient,
) -> None:
    rows = {row["name"]: row for row in http.get_model_repository_index()}
    assert rows["broken_init"]["state"] == "UNAVAILABLE"
    assert "RuntimeError: cannot initialize: missing weights" in rows["broken_init"]["reason"]
    assert not http.is_model_ready("broken_init")


# -- business logic scripting ---------------------------------------------------------------


def test_bls_calls_other_models_including_a_decoupled_one(
    http: httpclient.InferenceServerClient,
) -> None:
    model = np.array([b"add_sub"], dtype=object)
    result = http.infer("bls", _inputs(httpclient, INPUT0=A, INPUT1=B, MODEL=model))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)  # exec()
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)  # async_exec()
    np.testing.assert_array_equal(result.as_numpy("REPEATS"), [0, 1, 2])  # decoupled exec


def test_bls_to_an_unknown_model_is_the_models_error(
    http: httpclient.InferenceServerClient,
) -> None:
    model = np.array([b"missing"], dtype=object)
    with pytest.raises(InferenceServerException) as caught:
        http.infer("bls", _inputs(httpclient, INPUT0=A, INPUT1=B, MODEL=model))
    assert caught.value.status() == "500"
    assert "TritonModelException" in caught.value.message()
    assert "unknown model: 'missing'" in caught.value.message()


# -- decoupled models -----------------------------------------------------------------------


def _stream(client: grpcclient.InferenceServerClient) -> queue.Queue[Any]:
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    return answers


def test_grpc_stream_gets_every_response_then_the_final_flag(
    grpc: grpcclient.InferenceServerClient,
) -> None:
    answers = _stream(grpc)
    try:
        grpc.async_stream_infer(
            "repeat",
            _repeat_inputs(grpcclient, 4),
            request_id="s1",
            enable_empty_final_response=True,
        )
        seen = [answers.get(timeout=30) for _ in range(5)]
    finally:
        grpc.stop_stream()
    for index, (result, error) in enumerate(seen[:4]):
        assert error is None
        response = result.get_response(as_json=True)
        assert response["id"] == "s1"
        assert response["parameters"]["triton_final_response"] == {"bool_param": False}
        assert int(result.as_numpy("IDX")[0]) == index
        np.testing.assert_array_equal(result.as_numpy("OUT"), [5, 6])
    result, error = seen[4]
    final = result.get_response(as_json=True)
    assert error is None and final["parameters"]["triton_final_response"] == {"bool_param": True}
    assert "outputs" not in final


def test_grpc_stream_on_an_ordinary_model_is_one_final_response(
    grpc: grpcclient.InferenceServerClient,
) -> None:
    answers = _stream(grpc)
    try:
        grpc.async_stream_infer("add_sub", _inputs(grpcclient, INPUT0=A, INPUT1=B))
        result, error = answers.get(timeout=30)
    finally:
        grpc.stop_stream()
    assert error is None
    assert result.get_response(as_json=True)["parameters"]["triton_final_response"] == {
        "bool_param": True
    }
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)


def test_generate_stream_sends_one_event_per_response(server: ServerProcess) -> None:
    body = {"IN": [5, 6], "N": 3, "DELAY": 0.0, "id": "g1"}
    with httpx.stream("POST", f"{server.base}/v2/models/repeat/generate_stream", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert [e["IDX"] for e in events] == [0, 1, 2]
    assert all(e["OUT"] == [5, 6] and e["id"] == "g1" for e in events)
    assert all(e["model_name"] == "repeat" and e["model_version"] == "1" for e in events)


def test_generate_answers_one_json_object(server: ServerProcess) -> None:
    body = {"INPUT0": A.tolist(), "INPUT1": B.tolist()}
    reply = httpx.post(f"{server.base}/v2/models/add_sub/generate", json=body)
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["OUTPUT0"] == (A + B).tolist() and data["OUTPUT1"] == (A - B).tolist()
    one = httpx.post(
        f"{server.base}/v2/models/repeat/generate", json={"IN": [9], "N": 1, "DELAY": 0}
    )
    assert one.status_code == 200 and one.json()["OUT"] == 9


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "expected a JSON object"),
        (b"[" * 100_000, "nested deeper than the limit"),
        (b"[1, 2]", "expected a JSON object; received list"),
        (
            b'{"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1], "BOGUS": 1}',
            "['BOGUS'] name no input",
        ),
        (b'{"INPUT0": [1, 2, 3], "INPUT1": [1, 1, 1, 1]}', "input 'INPUT0': expected shape [4]"),
        (b'{"INPUT0": ["a", "b", "c", "d"], "INPUT1": [1, 1, 1, 1]}', "expected FP32 values"),
        (b'{"INPUT0": [1, 2, 3, 4], "INPUT1": [1, 1, 1, 1], "parameters": 3}', "'parameters'"),
    ],
)
def test_generate_bad_bodies_are_400_naming_the_field(
    server: ServerProcess, body: bytes, fragment: str
) -> None:
    reply = httpx.post(f"{server.base}/v2/models/add_sub/generate", content=body)
    assert reply.status_code == 400
    assert fragment in reply.json()["error"]


def test_plain_infer_on_a_decoupled_model_needs_exactly_one_response(
    http: httpclient.InferenceServerClient,
    grpc: grpcclient.InferenceServerClient,
    server: ServerProcess,
) -> None:
    result = http.infer("repeat", _repeat_inputs(httpclient, 1))
    np.testing.assert_array_equal(result.as_numpy("OUT"), [5, 6])
    for client, module in ((http, httpclient), (grpc, grpcclient)):
        with pytest.raises(InferenceServerException) as caught:
            client.infer("repeat", _repeat_inputs(module, 3))
        assert "is decoupled and sent 3 responses" in caught.value.message()
        assert "generate_stream" in caught.value.message()
    reply = httpx.post(
        f"{server.base}/v2/models/repeat/generate", json={"IN": [1], "N": 0, "DELAY": 0}
    )
    assert reply.status_code == 400 and "sent 0 responses" in reply.json()["error"]


def _wait_for_line(path: Path, line: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and line in path.read_text().split():
            return True
        time.sleep(0.05)
    return False


def test_cancelling_a_grpc_stream_reaches_the_model(
    grpc: grpcclient.InferenceServerClient, repository: Path
) -> None:
    answers = _stream(grpc)
    try:
        grpc.async_stream_infer("repeat", _repeat_inputs(grpcclient, 500, 0.02), request_id="c1")
        for _ in range(2):
            _, error = answers.get(timeout=30)
            assert error is None
    finally:
        grpc.stop_stream(cancel_requests=True)
    assert _wait_for_line(repository / "repeat" / "cancelled.txt", "c1")


def test_closing_a_generate_stream_reaches_the_model(
    server: ServerProcess, repository: Path
) -> None:
    body = {"IN": [1], "N": 500, "DELAY": 0.02, "id": "c2"}
    with httpx.stream("POST", f"{server.base}/v2/models/repeat/generate_stream", json=body) as r:
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
    assert _wait_for_line(repository / "repeat" / "cancelled.txt", "c2")


def test_sender_used_after_the_final_flag_raises_in_the_model(
    http: httpclient.InferenceServerClient,
) -> None:
    x = _inputs(httpclient, IN=np.array([1], np.int32))
    http.infer("late", x)
    message = http.infer("late", x).as_numpy("ERROR")[0].decode()
    assert message.startswith("TritonModelException: ")
    assert "final flag" in message
    np.testing.assert_array_equal(  # and the server goes on
        http.infer("add_sub", _inputs(httpclient, INPUT0=A, INPUT1=B)).as_numpy("OUTPUT0"), A + B
    )


# -- failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "status", "fragment"),
    [
        (-1.0, "500", "model 'failing': execute() raised ValueError: negative input -1.0"),
        (0.0, "400", "model 'failing': zero is not allowed"),
        (1.0, "500", "returned outputs ['WRONG'] that its config does not declare"),
    ],
)
def test_failing_model_is_a_clear_error_and_others_keep_serving(
    http: httpclient.InferenceServerClient, value: float, status: str, fragment: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        http.infer("failing", _inputs(httpclient, IN=np.array([value], np.float32)))
    assert caught.value.status() == status
    assert fragment in caught.value.message()
    assert "Traceback" not in caught.value.message()
    result = http.infer("add_sub", _inputs(httpclient, INPUT0=A, INPUT1=B))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def test_model_that_answers_with_its_sender_or_not_at_all(
    http: httpclient.InferenceServerClient,
) -> None:
    result = http.infer("sender_style", _inputs(httpclient, IN=np.array([4], np.int32)))
    np.testing.assert_array_equal(result.as_numpy("OUT"), [40])
    with pytest.raises(InferenceServerException) as caught:
        http.infer("sender_style", _inputs(httpclient, IN=np.array([0], np.int32)))
    assert caught.value.status() == "500"
    assert "execute() returned without a response to this request" in caught.value.message()


def test_worker_that_exits_fails_its_request_and_is_restarted(
    http: httpclient.InferenceServerClient,
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        http.infer("failing", _inputs(httpclient, IN=np.array([99.0], np.float32)))
    assert caught.value.status() == "500"
    assert "its worker process ended (exit code 3); it is restarted" in caught.value.message()
    with pytest.raises(InferenceServerException) as again:  # the restarted worker answers
        http.infer("failing", _inputs(httpclient, IN=np.array([0.0], np.float32)))
    assert "zero is not allowed" in again.value.message()
    stats = http.get_inference_statistics("failing")["model_stats"][0]["inference_stats"]
    assert stats["fail"]["count"] >= 2


def test_asyncio_grpc_client_infers_and_streams(server: ServerProcess) -> None:
    import tritonclient.grpc.aio as aioclient

    async def main() -> tuple[np.ndarray, list[int], list[str]]:
        client = aioclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
        try:
            result = await client.infer("add_sub", _inputs(aioclient, INPUT0=A, INPUT1=B))

            async def requests() -> Any:
                yield {
                    "model_name": "repeat",
                    "inputs": _repeat_inputs(aioclient, 3),
                    "request_id": "a1",
                }
                yield {
                    "model_name": "missing",
                    "inputs": _repeat_inputs(aioclient, 1),
                    "request_id": "a2",
                }

            indices, errors = [], []
            async for answer, error in client.stream_infer(requests()):
                if error is not None:
                    errors.append(str(error))
                else:
                    indices.append(int(answer.as_numpy("IDX")[0]))
                if len(indices) == 3 and errors:
                    break
            return result.as_numpy("OUTPUT0"), indices, errors
        finally:
            await client.close()

    output, indices, errors = asyncio.run(main())
    np.testing.assert_array_equal(output, A + B)
    assert indices == [0, 1, 2]
    assert len(errors) == 1 and "unknown model: 'missing'" in errors[0]


def test_unload_calls_finalize_and_load_starts_it_again(repository: Path) -> None:
    key = "triton-python-key"
    process = ServerProcess(
        repository, "--model-control-mode", "explicit", "--load-model", "*", "--api-key", key
    )
    try:
        client = httpclient.InferenceServerClient(process.url)
        headers = {"Authorization": f"Bearer {key}"}
        client.unload_model("add_sub", headers=headers)
        assert not client.is_model_ready("add_sub")
        assert "INFO [python model] finalized" in process.output()
        client.load_model("add_sub", headers=headers)
        result = client.infer("add_sub", _inputs(httpclient, INPUT0=A, INPUT1=B))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    finally:
        process.stop()
