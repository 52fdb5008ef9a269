"""The /metrics endpoint's handler in process (routing, methods, content type) and the device
gauges from a fake sampler, over a data plane on models in a dict."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from accelserve.device_usage import CpuUsage, GpuUsage
from accelserve.frontends.http_server import Request, Response
from accelserve.frontends.metrics import (
    CONTENT_TYPE,
    DeviceCollector,
    MetricsServer,
    build_registry,
    render,
)
from tests.unit.fake_models import simple_dataplane


def scrape(method: str, path: str) -> Response:
    registry = build_registry(simple_dataplane(), devices=False, process=False)
    server = MetricsServer(registry)

    async def run() -> Response:
        try:
            return await server.handle(Request(method, path, b"", [], b""))
        finally:
            await server.stop()

    return asyncio.run(run())


def test_metrics_route() -> None:
    status, headers, body = scrape("GET", "/metrics")
    assert status == 200 and headers == [(b"content-type", CONTENT_TYPE)]
    assert b'nv_inference_count{model="simple",version="2"} 0\n' in body
    assert scrape("HEAD", "/metrics")[0] == 200  # HttpServer leaves the body out


def test_other_routes_and_methods() -> None:
    status, _, body = scrape("GET", "/")
    assert status == 404 and body == b"metrics are at /metrics\n"
    status, headers, body = scrape("POST", "/metrics")
    assert status == 405 and b"expected GET or HEAD" in body
    assert (b"allow", b"GET, HEAD") in headers


class FakeSampler:
    def cpu(self) -> CpuUsage:
        return CpuUsage(utilization=0.5, memory_total_bytes=1000, memory_used_bytes=250)

    def gpus(self) -> list[GpuUsage]:
        return [
            GpuUsage("GPU-a", {"utilization": 0.25, "memory_used_bytes": 7, "power_watts": 70.5}),
            GpuUsage("GPU-b", {"utilization": 1.0}),  # a board that reports less
        ]


def test_device_gauges() -> None:
    text = render(DeviceCollector(FakeSampler()).collect()).decode()  # duck-typed sampler
    samples = {
        (s.name, s.labels.get("gpu_uuid", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("nv_cpu_utilization", "")] == 0.5
    assert samples[("nv_cpu_memory_used_bytes", "")] == 250
    assert samples[("nv_gpu_utilization", "GPU-b")] == 1.0
    assert samples[("nv_gpu_power_usage", "GPU-a")] == 70.5
    assert ("nv_gpu_power_usage", "GPU-b") not in samples
    assert "# TYPE nv_gpu_memory_total_bytes gauge" in text  # declared even when unread
