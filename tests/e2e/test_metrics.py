"""The Prometheus endpoint of a real server: known traffic over HTTP and gRPC, then a scrape
parsed with prometheus_client's parser, whose counters must match exactly (and match /stats)."""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ServerProcess, copy_example
from tests.e2e.test_batching_and_queue import SLOW_MODEL, slow_config

BUCKETS = "0.5,1,2.5,1000"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("metrics")
    repository = root / "models"
    copy_example("simple", repository)
    (repository / "slow" / "1").mkdir(parents=True)
    (repository / "slow" / "1" / "model.py").write_text(SLOW_MODEL)
    (repository / "slow" / "config.pbtxt").write_text(
        slow_config(
            "slow",
            0.6,
            root / "slow.log",
            "dynamic_batching { preferred_batch_size: [1] "
            "default_queue_policy { max_queue_size: 1 } }",
        )
    )
    process = ServerProcess(repository, env={"ACCELSERVE_METRICS_LATENCY_BUCKETS_MS": BUCKETS})
    yield process
    process.stop()


def scrape(server: ServerProcess) -> tuple[Samples, dict[str, str]]:
    response = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, types


def value(samples: Samples, name: str, model: str, **labels: str) -> float:
    return samples[(name, frozenset({"model": model, "version": "1", **labels}.items()))]


def _http_infer(server: ServerProcess, rows: int) -> None:
    data = np.arange(rows * 16).reshape(rows, 16).tolist()
    inputs = [
        {"name": n, "datatype": "INT32", "shape": [rows, 16], "data": data}
        for n in ("INPUT0", "INPUT1")
    ]
    response = httpx.post(f"{server.base}/v2/models/simple/infer", json={"inputs": inputs})
    assert response.status_code == 200, response.text


def _grpc_infer(client: grpcclient.InferenceServerClient, rows: int) -> None:
    a = np.ones((rows, 16), dtype=np.int32)
    inputs = [grpcclient.InferInput(n, [rows, 16], "INT32") for n in ("INPUT0", "INPUT1")]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), 2 * a)


def test_counters_match_known_traffic(metrics_server: ServerProcess) -> None:
    samples, types = scrape(metrics_server)
    for name in ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count"):
        assert value(samples, name + "_total", "simple") == 0  # the parser adds _total
        assert types[name] == "counter"
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{metrics_server.grpc_port}")
    http_rows, grpc_rows = [1, 2, 3, 8, 1], [4, 1, 2, 5]
    for rows in http_rows:
        _http_infer(metrics_server, rows)
    for rows in grpc_rows:
        _grpc_infer(client, rows)
    requests = len(http_rows) + len(grpc_rows)

    samples, types = scrape(metrics_server)
    stats = httpx.get(f"{metrics_server.base}/v2/models/simple/stats").json()["model_stats"][0]
    infer = stats["inference_stats"]
    assert value(samples, "nv_inference_request_success_total", "simple") == requests
    assert value(samples, "nv_inference_count_total", "simple") == sum(http_rows + grpc_rows)
    # One request at a time, so each is its own batch.
    assert value(samples, "nv_inference_exec_count_total", "simple") == requests
    assert stats["execution_count"] == requests
    for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
        assert value(samples, "nv_inference_request_failure_total", "simple", reason=reason) == 0
    assert value(samples, "nv_inference_pending_request_count", "simple") == 0
    assert types["nv_inference_pending_request_count"] == "gauge"
    for metric, field in (
        ("nv_inference_request_duration_us", "success"),
        ("nv_inference_queue_duration_us", "queue"),
        ("nv_inference_compute_input_duration_us", "compute_input"),
        ("nv_inference_compute_infer_duration_us", "compute_infer"),
        ("nv_inference_compute_output_duration_us", "compute_output"),
    ):
        assert value(samples, metric + "_total", "simple") == infer[field]["ns"] // 1000, metric
    assert value(samples, "nv_inference_request_duration_us_total", "simple") > 0

    for histogram, field in (
        ("nv_inference_first_response_histogram_ms", "success"),
        ("accelserve_inference_queue_histogram_ms", "queue"),
        ("accelserve_inference_compute_infer_histogram_ms", "compute_infer"),
    ):
        assert types[histogram] == "histogram"
        buckets = [
            value(samples, histogram + "_bucket", "simple", le=le)
            for le in ("0.5", "1.0", "2.5", "1000.0", "+Inf")
        ]
        assert buckets == sorted(buckets), histogram  # cumulative
        assert buckets[-1] == value(samples, histogram + "_count", "simple") == requests
        total_ms = value(samples, histogram + "_sum", "simple")
        assert total_ms == pytest.approx(infer[field]["ns"] / 1e6, rel=1e-9)
    # the configured buckets, and only those
    les = {
        dict(labels)["le"]
        for (name, labels) in samples
        if name == "nv_inference_first_response_histogram_ms_bucket"
        and dict(labels)["model"] == "simple"
    }
    assert les == {"0.5", "1.0", "2.5", "1000.0", "+Inf"}


def test_failures_pending_and_cancellation(metrics_server: ServerProcess) -> None:
    body = {"inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    url = f"{metrics_server.base}/v2/models/slow/infer"
    with cf.ThreadPoolExecutor(2) as pool:
        running = pool.submit(httpx.post, url, json=body, timeout=30)
        time.sleep(0.15)
        queued = pool.submit(httpx.post, url, json=body, timeout=30)
        time.sleep(0.15)
        samples, _ = scrape(metrics_server)
        assert value(samples, "nv_inference_pending_request_count", "slow") == 2
        rejected = httpx.post(url, json=body, timeout=30)  # max_queue_size 1: queue is full
        assert rejected.status_code == 503, rejected.text
        assert running.result().status_code == 200
        # a gRPC client that gives up while its request waits: counted as CANCELED
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{metrics_server.grpc_port}")
        x = grpcclient.InferInput("X", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), np.float32))
        with pytest.raises(Exception) as info:
            client.infer("slow", [x], client_timeout=0.2)
        assert "Deadline" in str(info.value) or "DEADLINE" in str(info.value)
        assert queued.result().status_code == 200
    deadline = time.monotonic() + 10
    while True:
        samples, _ = scrape(metrics_server)
        if value(samples, "nv_inference_pending_request_count", "slow") == 0:
            break
        assert time.monotonic() < deadline, "requests still pending"
        time.sleep(0.05)
    assert value(samples, "nv_inference_request_success_total", "slow") == 2
    assert value(samples, "nv_inference_request_failure_total", "slow", reason="REJECTED") == 1
    assert value(samples, "nv_inference_request_failure_total", "slow", reason="CANCELED") == 1
    assert value(samples, "nv_inference_request_failure_total", "slow", reason="BACKEND") == 0
    # failures are not part of the request-duration counters or the latency histogram
    assert value(samples, "nv_inference_first_response_histogram_ms_count", "slow") == 2
    stats = httpx.get(f"{metrics_server.base}/v2/models/slow/stats").json()["model_stats"][0]
    assert stats["inference_stats"]["fail"]["count"] == 2


def test_device_gauges(metrics_server: ServerProcess) -> None:
    samples, types = scrape(metrics_server)
    utilization = samples[("nv_cpu_utilization", frozenset())]
    assert 0.0 <= utilization <= 1.0
    total = samples[("nv_cpu_memory_total_bytes", frozenset())]
    used = samples[("nv_cpu_memory_used_bytes", frozenset())]
    assert 0 < used < total
    assert types["nv_cpu_utilization"] == "gauge"
    assert samples[("process_resident_memory_bytes", frozenset())] > 0


def test_endpoint_http_behaviour(metrics_server: ServerProcess) -> None:
    base = f"http://127.0.0.1:{metrics_server.metrics_port}"
    with httpx.Client(base_url=base, timeout=10) as client:
        first = client.get("/metrics")
        second = client.get("/metrics?name=x")  # same keep-alive connection
        assert first.status_code == second.status_code == 200
        assert first.headers["connection"] == "keep-alive"
        assert client.get("/").status_code == 404
        assert client.post("/metrics").status_code == 405
        head = client.head("/metrics")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0


def test_metrics_do_not_disturb_grpc_errors(metrics_server: ServerProcess) -> None:
    # A request the data plane rejects is not a scheduler failure: /stats and /metrics agree.
    before, _ = scrape(metrics_server)
    with grpc.insecure_channel(f"127.0.0.1:{metrics_server.grpc_port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError):
            call(b"\xff", timeout=10)
    after, _ = scrape(metrics_server)
    for reason in ("REJECTED", "CANCELED", "BACKEND", "OTHER"):
        key = ("nv_inference_request_failure_total", "simple", reason)
        assert value(after, key[0], key[1], reason=reason) == value(
            before, key[0], key[1], reason=reason
        )
