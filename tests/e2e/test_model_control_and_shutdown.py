"""Model control (off by default, key required when on) and graceful shutdown under load."""

from __future__ import annotations

import concurrent.futures as cf
import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.conftest import ServerProcess, copy_example
from tests.e2e.test_batching_and_queue import SLOW_MODEL, slow_config

KEY = "test-key-123"


def test_model_control_is_off_by_default(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base}/v2/repository/models/simple/unload")
    assert response.status_code == 403
    assert "model control is disabled" in response.json()["error"]
    assert httpx.get(f"{server.base}/v2/models/simple/ready").status_code == 200


def test_model_control_needs_the_key(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    copy_example("simple", repository)
    process = ServerProcess(
        repository, "--model-control-mode", "explicit", "--load-model", "*", "--api-key", KEY
    )
    try:
        base = process.base
        unload = f"{base}/v2/repository/models/simple/unload"
        assert httpx.post(unload).status_code == 401
        assert httpx.post(unload, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.post(unload, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200, ok.text
        assert httpx.get(f"{base}/v2/models/simple/ready").status_code == 400
        index = httpx.post(f"{base}/v2/repository/index", json={}).json()
        assert {"name": "simple", "state": "UNAVAILABLE", "reason": "unloaded"}.items() <= index[
            0
        ].items()

        # tritonclient's own load call, with the key as a header
        client = httpclient.InferenceServerClient(process.url)
        client.load_model("simple", headers={"Authorization": f"Bearer {KEY}"})
        assert client.is_model_ready("simple")
        with pytest.raises(InferenceServerException):
            client.load_model("simple")  # no key
        missing = httpx.post(
            f"{base}/v2/repository/models/absent/load", headers={"Authorization": f"Bearer {KEY}"}
        )
        assert missing.status_code == 404
        # a model added after start-up can be loaded
        shutil.copytree(repository / "simple", repository / "simple2")
        config = repository / "simple2" / "config.pbtxt"
        config.write_text(config.read_text().replace('name: "simple"', 'name: "simple2"'))
        client.load_model("simple2", headers={"Authorization": f"Bearer {KEY}"})
        assert client.is_model_ready("simple2")
    finally:
        process.stop()


def test_explicit_control_without_key_refuses_to_start(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    copy_example("simple", repository)
    with pytest.raises(RuntimeError, match="API key"):
        ServerProcess(repository, "--model-control-mode", "explicit")


def _wait_accepted(process: ServerProcess, model: str, count: int) -> None:
    """Until the server has taken ``count`` requests for ``model`` (answered or pending), as its
    own metrics say."""
    wanted = (
        f'nv_inference_request_success{{model="{model}",version="1"}}',
        f'nv_inference_pending_request_count{{model="{model}",version="1"}}',
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = httpx.get(f"http://127.0.0.1:{process.metrics_port}/metrics", timeout=5).text
        values = [line.split()[-1] for line in text.splitlines() if line.startswith(wanted)]
        if sum(float(v) for v in values) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"the server never held {count} requests for {model}:\n{text}")


def test_sigterm_under_load_loses_no_accepted_request(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    (repository / "slow" / "1").mkdir(parents=True)
    (repository / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    (repository / "slow" / "config.pbtxt").write_text(
        slow_config(
            "slow",
            0.4,
            tmp_path / "slow.log",
            "dynamic_batching { max_queue_delay_microseconds: 1000 }",
        )
    )
    process = ServerProcess(repository)

    def call(i: int) -> tuple[int, float]:
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [float(i)]}]}
        response = httpx.post(f"{process.base}/v2/models/slow/infer", json=body, timeout=60)
        return response.status_code, response.json()["outputs"][0]["data"][0]

    with cf.ThreadPoolExecutor(24) as pool:
        accepted = [pool.submit(call, i) for i in range(24)]
        _wait_accepted(process, "slow", 24)  # all 24 are in the server: running, queued or done
        process.process.send_signal(signal.SIGTERM)
        results = [f.result() for f in accepted]
    assert results == [(200, 2.0 * i) for i in range(24)]
    assert process.process.wait(30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{process.base}/v2/health/live", timeout=2)
    process.stop()


def test_ready_goes_false_while_draining(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    (repository / "slow" / "1").mkdir(parents=True)
    (repository / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    (repository / "slow" / "config.pbtxt").write_text(
        slow_config("slow", 1.5, tmp_path / "slow.log", "dynamic_batching { }")
    )
    process = ServerProcess(repository)
    client = httpx.Client(base_url=process.base, timeout=30)
    assert client.get("/v2/health/ready").status_code == 200  # keep-alive connection
    with cf.ThreadPoolExecutor(1) as pool:
        body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
        running = pool.submit(
            httpx.post, f"{process.base}/v2/models/slow/infer", json=body, timeout=30
        )
        time.sleep(0.3)
        process.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        try:
            status = client.get("/v2/health/ready").status_code
        except httpx.HTTPError:
            status = 0  # the connection was closed: also "not ready"
        assert status != 200
        assert running.result().status_code == 200
    client.close()
    assert process.process.wait(30) == 0
    process.stop()
