"""`--group` on a real Ray cluster (head node only): two groups, each its own deployment,
behind accelserve's router, the cluster started with Ray Serve's fast front door (HAProxy and
direct ingress, ``RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_THROUGHPUT_OPTIMIZED=1``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess, copy_example
from tests.ray_cluster import LocalRayCluster

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]
pytest.importorskip("ray.serve")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("ray_groups") / "models"
    simple = copy_example("simple", root)
    other = root / "simple_copy"
    (other / "1").mkdir(parents=True)
    (other / "1" / "model.onnx").write_bytes((simple / "1" / "model.onnx").read_bytes())
    config = (simple / "config.pbtxt").read_text()
    (other / "config.pbtxt").write_text(config.replace('name: "simple"', 'name: "simple_copy"'))
    # A replica leaving direct ingress drains for 30 s by default: deleting the app would wait.
    drain = {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
    cluster = LocalRayCluster(head_cpus=4, haproxy=True, env=drain)
    try:
        process = ServerProcess(
            root,
            "--ray",
            cluster.address,
            "--group",
            "copy=simple_copy",
            "--ray-ingress",
            "serve",  # the plain mode: Ray's proxy (here Ray's HAProxy) on --http-port
            "--device",
            "cpu",
            env=cluster.env,
        )
        try:
            yield process
        finally:
            code = process.stop(timeout=90)
            assert code == 0, process.log_path.read_text()[-3000:]
    finally:
        cluster.stop()


def infer(base: str, model: str, value: int) -> httpx.Response:
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [value] * 16},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": [1] * 16},
        ]
    }
    return httpx.post(f"{base}/v2/models/{model}/infer", json=body, timeout=60)


def test_each_model_is_served_by_its_group(server: ServerProcess) -> None:
    for model in ("simple", "simple_copy"):
        for value in range(5):
            response = infer(server.base, model, value)
            assert response.status_code == 200, response.text
            assert response.json()["model_name"] == model
            assert response.json()["outputs"][0]["data"] == [value + 1] * 16
    response = infer(server.base, "nope", 0)
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


def test_tritonclient_binary_tensors_through_haproxy(server: ServerProcess) -> None:
    import numpy as np
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.url)
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = httpclient.InferInput(name, [1, 16], "INT32")
        tensor.set_data_from_numpy(a, binary_data=True)
        inputs.append(tensor)
    try:
        result = client.infer("simple_copy", inputs)
    finally:
        client.close()
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - a)


def test_server_wide_routes_cover_every_group(server: ServerProcess) -> None:
    assert httpx.get(f"{server.base}/v2/health/ready", timeout=30).status_code == 200
    index = httpx.post(f"{server.base}/v2/repository/index", json={}, timeout=30).json()
    assert sorted(row["name"] for row in index) == ["simple", "simple_copy"]
    before = {
        s["name"]: s["inference_count"]
        for s in httpx.get(f"{server.base}/v2/models/stats", timeout=30).json()["model_stats"]
    }
    for value in range(3):
        assert infer(server.base, "simple_copy", value).status_code == 200
    after = httpx.get(f"{server.base}/v2/models/stats", timeout=30).json()["model_stats"]
    counts = {s["name"]: s["inference_count"] for s in after}
    assert counts == {"simple": before["simple"], "simple_copy": before["simple_copy"] + 3}
    one = httpx.get(f"{server.base}/v2/models/simple_copy/stats", timeout=30).json()
    assert [s["inference_count"] for s in one["model_stats"]] == [counts["simple_copy"]]
