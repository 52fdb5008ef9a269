"""Dynamic batching, queue policy and priorities through a real server process.

The `slow` model is a Python-backend model that sleeps a fixed time per batch, so that queueing
behaviour is observable from outside."""

from __future__ import annotations

import concurrent.futures as cf
import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import ServerProcess

SLOW_MODEL = """
import time
from collections.abc import Callable
import numpy as np

class Model:
    def initialize(self, config, device):
        self.delay = float(config["parameters"]["delay_s"]["string_value"])
        self.log = config["parameters"]["log"]["string_value"]

    def execute(self, batch):
        x = batch["X"]
        with open(self.log, "a") as f:
            f.write(" ".join(str(int(v)) for v in x[:, 0]) + "\\n")
        time.sleep(self.delay)
        return {"Y": x * 2}

    def finalize(self):
        pass
"""


def slow_config(name: str, delay_s: float, log: Path, batching: str) -> str:
    return f"""
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "Y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
{batching}
parameters {{ key: "delay_s" value {{ string_value: "{delay_s}" }} }}
parameters {{ key: "log" value {{ string_value: "{log}" }} }}
"""


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("queue")
    repository = root / "models"
    models = {
        # batches up to 8 rows, waits up to 50 ms to fill a batch
        "batched": (0.05, "dynamic_batching { max_queue_delay_microseconds: 50000 }"),
        # one request at a time, queue of 2
        "small_queue": (
            0.5,
            "dynamic_batching { preferred_batch_size: [1] default_queue_policy { max_queue_size: 2 } }",
        ),
        # requests time out after 200 ms in the queue
        "timeouts": (
            0.6,
            "dynamic_batching { preferred_batch_size: [1] default_queue_policy "
            "{ default_timeout_microseconds: 200000 allow_timeout_override: true } }",
        ),
        # two priority levels, batch of one at a time so the order is visible
        "priorities": (
            0.6,  # long enough for the five requests behind the blocker to queue
            "dynamic_batching { preferred_batch_size: [1] priority_levels: 2 default_priority_level: 2 }",
        ),
    }
    logs = {}
    for name, (delay, batching) in models.items():
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "1" / "model.py").write_text(SLOW_MODEL)
        logs[name] = root / f"{name}.log"
        # max_batch_size 1 would make priorities trivially ordered; keep 8 and prefer 1
        config = slow_config(name, delay, logs[name], batching)
        (repository / name / "config.pbtxt").write_text(config)
    process = ServerProcess(repository)
    yield process, logs
    process.stop()


def _infer(
    base: str, model: str, value: float, rows: int = 1, **parameters: object
) -> httpx.Response:
    body = {
        "inputs": [{"name": "X", "datatype": "FP32", "shape": [rows, 1], "data": [value] * rows}],
        "parameters": parameters,
    }
    return httpx.post(f"{base}/v2/models/{model}/infer", content=json.dumps(body), timeout=60)


def test_concurrent_requests_are_batched_and_answered_correctly(queue_server) -> None:
    server, _ = queue_server
    client = httpclient.InferenceServerClient(server.url, concurrency=16)
    before = client.get_inference_statistics("batched")["model_stats"][0]
    values = np.arange(32, dtype=np.float32)
    pending = []
    for v in values:
        x = httpclient.InferInput("X", [1, 1], "FP32")
        x.set_data_from_numpy(np.array([[v]], np.float32))
        pending.append(client.async_infer("batched", [x]))
    results = [p.get_result().as_numpy("Y")[0, 0] for p in pending]
    np.testing.assert_array_equal(results, values * 2)
    after = client.get_inference_statistics("batched")["model_stats"][0]
    inferences = int(after["inference_count"]) - int(before["inference_count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert inferences == 32
    assert executions < inferences
    sizes = {s["batch_size"] for s in after["batch_stats"]}
    assert max(sizes) > 1


def test_multi_row_requests_count_by_rows(queue_server) -> None:
    server, _ = queue_server
    with cf.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(_infer, server.base, "batched", float(i), rows=3) for i in range(4)]
        for i, future in enumerate(futures):
            response = future.result()
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["data"] == [2.0 * i] * 3


def test_queue_full_is_rejected_with_503(queue_server) -> None:
    server, _ = queue_server
    with cf.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(_infer, server.base, "small_queue", float(i)) for i in range(8)]
        responses = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in responses)
    # one running + two queued succeed; the rest are refused at once
    assert statuses.count(200) >= 3
    rejected = [r for r in responses if r.status_code == 503]
    assert rejected, statuses
    assert all("queue" in r.json()["error"].lower() for r in rejected)
    assert set(statuses) <= {200, 503}


def test_queue_timeout_rejects(queue_server) -> None:
    server, _ = queue_server
    with cf.ThreadPoolExecutor(3) as pool:
        first = pool.submit(_infer, server.base, "timeouts", 1.0)
        time.sleep(0.1)
        started = time.monotonic()
        second = pool.submit(_infer, server.base, "timeouts", 2.0)
        response = second.result()
        waited = time.monotonic() - started
        assert first.result().status_code == 200
    assert response.status_code == 503
    assert "timeout" in response.json()["error"].lower()
    assert waited < 0.55  # rejected when its 200 ms expired, not when the first batch ended


def _until(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def _pending(server: ServerProcess, model: str) -> int:
    """Requests the server holds for ``model`` (queued or running), from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    sample = f'nv_inference_pending_request_count{{model="{model}",version="1"}}'
    return sum(int(float(ln.split()[-1])) for ln in text.splitlines() if ln.startswith(sample))


def test_priority_order(queue_server) -> None:
    server, logs = queue_server
    log = logs["priorities"]
    log.write_text("")
    with cf.ThreadPoolExecutor(8) as pool:
        blocker = pool.submit(_infer, server.base, "priorities", 100.0)
        _until(lambda: log.read_text().strip() == "100")  # the blocker runs; the rest queue
        low = [
            pool.submit(_infer, server.base, "priorities", 10.0 + i, priority=2) for i in range(3)
        ]
        _until(lambda: _pending(server, "priorities") == 4)  # the low ones wait behind it
        high = [
            pool.submit(_infer, server.base, "priorities", 20.0 + i, priority=1) for i in range(2)
        ]
        for f in [blocker, *low, *high]:
            assert f.result().status_code == 200
    order = [int(line.split()[0]) for line in log.read_text().split("\n") if line]
    assert order[0] == 100
    assert set(order[1:3]) == {20, 21}, order
    assert set(order[3:]) == {10, 11, 12}, order
