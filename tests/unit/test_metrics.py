"""Latency histograms in ModelStats, the Triton-style text rendering, the collector over a real
data plane, and the asyncio /metrics server (no server process)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from accelserve import stats as stats_module
from accelserve.dataplane import DataPlane
from accelserve.frontends.metrics import (
    BUCKETS_ENV,
    ModelStatsCollector,
    generate,
    latency_buckets_from_env,
    render,
    start_metrics_server,
)
from accelserve.repository import ModelRepository
from accelserve.stats import Duration, Histogram, ModelStats, bounds_ns, enable_histograms
from tests.conftest import copy_example


@pytest.fixture(autouse=True)
def histograms_off() -> Iterator[None]:
    stats_module.disable_histograms()
    yield
    stats_module.disable_histograms()


# ------------------------------------------------------------------------------ histograms


def test_histogram_buckets_use_le_semantics() -> None:
    histogram = Histogram(bounds_ns=bounds_ns([1, 2]))
    for ns in (0, 1_000_000, 1_000_001, 2_000_000, 2_000_001, 10**12):
        histogram.add(ns)
    assert histogram.buckets == [2, 2, 2]  # <=1 ms, <=2 ms, +Inf
    assert (histogram.count, histogram.ns) == (6, 1_000_000 + 1_000_001 + 4_000_001 + 10**12)
    assert histogram.as_dict() == {"count": 6, "ns": histogram.ns}  # /stats shape unchanged
    histogram.add(3_000_000, count=3)  # three of 1 ms each
    assert histogram.buckets == [5, 2, 2]


@pytest.mark.parametrize(
    ("buckets", "needle"),
    [
        ([], "one or more"),
        ([1, -2], "positive"),
        ([1, float("inf")], "finite"),
        ([1, 1], "increasing"),
        ([5, 2], "increasing"),
    ],
)
def test_bucket_validation(buckets: list[float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        bounds_ns(buckets)


def test_enable_histograms_upgrades_old_and_new_stats() -> None:
    old = ModelStats("m", "1")
    old.success.add(5_000_000)
    assert type(old.success) is Duration
    bounds = enable_histograms([1, 10])
    assert bounds == (1_000_000, 10_000_000)
    old.enable_histograms(bounds)
    assert isinstance(old.success, Histogram) and isinstance(old.queue, Histogram)
    assert type(old.compute_input) is Duration  # only the three latency fields
    # the observation made before has no bucket: it counts as +Inf, keeping count == +Inf
    assert (old.success.count, old.success.ns, old.success.buckets) == (1, 5_000_000, [0, 0, 1])
    old.success.add(5_000_000)
    assert old.success.buckets == [0, 1, 1]
    new = ModelStats("m", "2")
    assert isinstance(new.compute_infer, Histogram) and new.compute_infer.bounds_ns == bounds
    stats_module.disable_histograms()
    assert type(ModelStats("m", "3").success) is Duration


def test_buckets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BUCKETS_ENV, raising=False)
    assert latency_buckets_from_env([3.0]) == [3.0]
    monkeypatch.setenv(BUCKETS_ENV, " 0.5, 1,20 ")
    assert latency_buckets_from_env() == [0.5, 1.0, 20.0]
    monkeypatch.setenv(BUCKETS_ENV, "0.5;1")
    with pytest.raises(ValueError, match=BUCKETS_ENV):
        latency_buckets_from_env()


# ------------------------------------------------------------------------------- rendering


def test_render_keeps_triton_counter_names() -> None:
    triton = Metric("nv_inference_count", "rows", "counter")
    triton.samples.append(Sample("nv_inference_count", {"model": 'a"b\\c\nd', "version": "1"}, 7))
    gauge = GaugeMetricFamily("nv_cpu_utilization", "util")
    gauge.add_metric([], 0.25)
    native = Metric("process_cpu_seconds", "cpu", "counter")  # prometheus_client's own style
    native.samples.append(Sample("process_cpu_seconds_total", {}, 1.5))
    text = render([triton, gauge, native]).decode()
    assert "# TYPE nv_inference_count counter\n" in text
    assert 'nv_inference_count{model="a\\"b\\\\c\\nd",version="1"} 7\n' in text
    assert "nv_cpu_utilization 0.25\n" in text
    assert "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["nv_inference_count"].samples[0].labels["model"] == 'a"b\\c\nd'
    assert families["nv_inference_count"].samples[0].value == 7
    assert families["process_cpu_seconds"].samples[0].value == 1.5


# ------------------------------------------------------------------- collector, real models


def _dataplane(tmp_path: Path) -> DataPlane:
    repository_dir = tmp_path / "models"
    copy_example("simple", repository_dir)
    repository = ModelRepository(repository_dir)
    asyncio.run(repository.load_all())
    dataplane = DataPlane(repository)
    return dataplane


def test_collector_reads_model_stats(tmp_path: Path) -> None:
    enable_histograms([1, 10])
    dataplane = _dataplane(tmp_path)
    try:
        stats = dataplane.model("simple").stats
        stats.success.add(2_500_000)  # 2.5 ms
        stats.success.add(500_000)
        stats.queue.add(1_999)
        stats.inference_count += 5
        stats.record_batch(5, 1, 2, 3)
        stats.record_failure("BACKEND", 10)
        stats.record_failure("TIMEOUT", 10)  # a reason outside Triton's four still shows
        stats.pending = 3
        stats.isolation_retries = 4
        collector = ModelStatsCollector(dataplane)
        text = render(collector.collect()).decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        labels = (("model", "simple"), ("version", "1"))

        def get(name: str, *extra: tuple[str, str]) -> float:
            return samples[(name, tuple(sorted(labels + extra)))]

        assert get("nv_inference_request_success_total") == 2
        assert get("nv_inference_count_total") == 5
        assert get("nv_inference_exec_count_total") == 1
        assert get("accelserve_inference_isolation_retry_count_total") == 4
        assert get("nv_inference_pending_request_count") == 3
        assert get("nv_inference_request_duration_us_total") == 3000
        assert get("nv_inference_queue_duration_us_total") == 1  # 1999 ns -> 1 us, truncated
        assert get("nv_inference_request_failure_total", ("reason", "BACKEND")) == 1
        assert get("nv_inference_request_failure_total", ("reason", "TIMEOUT")) == 1
        assert get("nv_inference_request_failure_total", ("reason", "REJECTED")) == 0
        histogram = "nv_inference_first_response_histogram_ms"
        assert get(histogram + "_bucket", ("le", "1.0")) == 1
        assert get(histogram + "_bucket", ("le", "10.0")) == 2
        assert get(histogram + "_bucket", ("le", "+Inf")) == 2
        assert get(histogram + "_sum") == 3.0
        # an unloaded model leaves the exposition
        asyncio.run(dataplane.repository.unload("simple"))
        assert 'model="simple"' not in render(collector.collect()).decode()
    finally:
        asyncio.run(dataplane.repository.stop())


# ------------------------------------------------------------------------------ the server


def test_metrics_server_serves_and_stops(tmp_path: Path) -> None:
    dataplane = _dataplane(tmp_path)
    stats = dataplane.model("simple").stats
    assert type(stats.success) is Duration  # nothing counted into buckets before metrics start

    async def run() -> None:
        server = await start_metrics_server(dataplane, "127.0.0.1", 0, latency_buckets_ms=[2, 4])
        try:
            assert isinstance(stats.success, Histogram)
            assert stats.success.bounds_ns == (2_000_000, 4_000_000)
            stats.success.add(3_000_000)
            url = f"http://127.0.0.1:{server.port}/metrics"
            response = await asyncio.to_thread(httpx.get, url)
            assert response.status_code == 200
            assert (
                'nv_inference_first_response_histogram_ms_bucket{model="simple",version="1",'
                'le="4.0"} 1' in response.text
            )
            # a second server on the same port is a clear error, not a silent bind
            with pytest.raises(Exception, match="cannot listen"):
                await start_metrics_server(dataplane, "127.0.0.1", server.port)
        finally:
            await server.stop()
        with pytest.raises(httpx.ConnectError):
            await asyncio.to_thread(httpx.get, url)
        assert generate(server.registry)  # the registry still renders after stop

    try:
        asyncio.run(run())
    finally:
        asyncio.run(dataplane.repository.stop())
