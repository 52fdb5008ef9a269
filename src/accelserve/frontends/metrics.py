"""Prometheus metrics on ``GET /metrics``, with Triton's metric names and labels.

Nothing is counted for this endpoint: a collector reads the models' ``ModelStats`` (which the
schedulers keep for ``/stats`` anyway) and the device gauges when Prometheus scrapes, so the hot
path pays nothing for it except the latency-histogram buckets (one ``bisect`` per observation,
switched on here; see ``accelserve.stats``).

Per model version (labels ``model``, ``version``), as Triton names them:

- counters ``nv_inference_request_success``, ``nv_inference_request_failure`` (label
  ``reason``: REJECTED, CANCELED, BACKEND, OTHER), ``nv_inference_count`` (rows inferred),
  ``nv_inference_exec_count`` (backend executions), and the cumulative durations of successful
  requests in microseconds ``nv_inference_request_duration_us``, ``..._queue_duration_us``,
  ``..._compute_input_duration_us``, ``..._compute_infer_duration_us``,
  ``..._compute_output_duration_us``; and accelserve's ``accelserve_inference_isolation_retry_count``
  (backend calls re-run to find the requests that failed a batch);
- gauge ``nv_inference_pending_request_count``;
- server-wide (no model label), counter ``accelserve_inference_request_failure_no_model`` (label
  ``reason``): failed inference requests that named no READY model (an invalid or unknown model
  name or version, a model not READY, a gRPC message that does not parse, an HTTP request
  refused before routing: malformed, head too large or too slow, a connection or body cap), which Triton does not
  count anywhere; per-model failures include requests rejected before they reached the model;
- histograms in milliseconds: ``nv_inference_first_response_histogram_ms`` (Triton's name; for
  a non-decoupled model the first response is the response, so this is request latency),
  ``accelserve_inference_queue_histogram_ms`` and ``accelserve_inference_compute_infer_histogram_ms``,
  with buckets from ``latency_buckets_ms`` or ``ACCELSERVE_METRICS_LATENCY_BUCKETS_MS`` ("0.5,1,5").

Device gauges, as Triton names them: ``nv_cpu_utilization`` (0..1), ``nv_cpu_memory_total_bytes``,
``nv_cpu_memory_used_bytes`` (psutil); with nvidia-ml-py and a GPU, per ``gpu_uuid``:
``nv_gpu_utilization`` (0..1), ``nv_gpu_memory_total_bytes``, ``nv_gpu_memory_used_bytes``,
``nv_gpu_power_usage`` (watts), read by ``accelserve.device_usage``. Plus prometheus_client's
``process_*`` metrics.

The text is Prometheus' format 0.0.4 as Triton writes it: counters keep their names, without
the ``_total`` that prometheus_client's own renderer would add (dashboards query Triton's names).
The endpoint is the project's own ``HttpServer`` on its own port; rendering runs on a worker
thread, so a scrape never holds up the event loop's requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from accelserve.dataplane import DataPlane
from accelserve.device_usage import DeviceSampler
from accelserve.errors import UnavailableError
from accelserve.frontends.errors import MethodNotAllowedError, expect_method, http_status
from accelserve.frontends.http_server import HttpServer, Request, Response
from accelserve.stats import (
    DEFAULT_LATENCY_BUCKETS_MS,
    FAILURE_REASONS,  # Triton's, always exported
    Duration,
    Histogram,
    ModelStats,
)
from accelserve.stats import enable_histograms as _enable_histograms

log = logging.getLogger("accelserve.metrics")

# Prometheus' spelling of a float ("+Inf", "1e+06"); prometheus_client leaves it unannotated.
floatToGoString: Callable[[float], str] = _untyped_float_to_go_string

BUCKETS_ENV = "ACCELSERVE_METRICS_LATENCY_BUCKETS_MS"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
MAX_BODY_BYTES = 64 * 1024  # a scrape has no body
_LABELS = ["model", "version"]
_US_COUNTERS = (  # (metric, ModelStats field, help)
    ("nv_inference_request_duration_us", "success", "request duration"),
    ("nv_inference_queue_duration_us", "queue", "queuing duration"),
    ("nv_inference_compute_input_duration_us", "compute_input", "compute input duration"),
    ("nv_inference_compute_infer_duration_us", "compute_infer", "compute infer duration"),
    ("nv_inference_compute_output_duration_us", "compute_output", "compute output duration"),
)
_HISTOGRAMS = (  # (metric, ModelStats field, help)
    (
        "nv_inference_first_response_histogram_ms",
        "success",
        "Duration from request to response of successful inference requests, in milliseconds",
    ),
    (
        "accelserve_inference_queue_histogram_ms",
        "queue",
        "Time successful inference requests waited in the queue, in milliseconds",
    ),
    (
        "accelserve_inference_compute_infer_histogram_ms",
        "compute_infer",
        "Model execution time of successful inference requests, in milliseconds",
    ),
)


def latency_buckets_from_env(default: Sequence[float] = DEFAULT_LATENCY_BUCKETS_MS) -> list[float]:
    text = os.environ.get(BUCKETS_ENV, "").strip()
    if not text:
        return list(default)
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"{BUCKETS_ENV}: expected comma-separated milliseconds such as '0.5,1,5,10'; "
            f"received {text!r}"
        ) from None


# ------------------------------------------------------------------------------ collectors


def _counter(name: str, documentation: str) -> Metric:
    return Metric(name, documentation, "counter")


class ModelStatsCollector(Collector):
    """Triton's per-model metrics, read from the ModelStats of every READY model version."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def collect(self) -> Iterator[Metric]:
        models = self.dataplane.version_stats()
        success = _counter(
            "nv_inference_request_success", "Number of successful inference requests"
        )
        failure = _counter("nv_inference_request_failure", "Number of failed inference requests")
        count = _counter(
            "nv_inference_count", "Number of inferences performed (a batch of n counts n)"
        )
        executions = _counter("nv_inference_exec_count", "Number of model executions performed")
        retries = _counter(
            "accelserve_inference_isolation_retry_count",
            "Number of model executions re-run to find the requests that failed a batch",
        )
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Instantaneous number of requests accepted and not yet answered",
            labels=_LABELS,
        )
        durations = [
            (_counter(name, f"Cumulative {what} of successful requests, in microseconds"), field)
            for name, field, what in _US_COUNTERS
        ]
        for stats in models:
            labels = {"model": stats.name, "version": stats.version}
            success.samples.append(Sample(success.name, labels, stats.success.count))
            reasons = dict.fromkeys(FAILURE_REASONS, 0) | stats.fail_reasons
            for reason, value in sorted(reasons.items()):
                failure.samples.append(Sample(failure.name, {**labels, "reason": reason}, value))
            count.samples.append(Sample(count.name, labels, stats.inference_count))
            executions.samples.append(Sample(executions.name, labels, stats.execution_count))
            retries.samples.append(Sample(retries.name, labels, stats.isolation_retries))
            pending.add_metric([stats.name, stats.version], stats.pending)
            for metric, field in durations:
                duration: Duration = getattr(stats, field)
                metric.samples.append(Sample(metric.name, labels, duration.ns // 1000))
        no_model = _counter(
            "accelserve_inference_request_failure_no_model",
            "Number of failed inference requests that named no READY model",
        )
        reasons = dict.fromkeys(FAILURE_REASONS, 0) | self.dataplane.failures_without_model.copy()
        for reason, value in sorted(reasons.items()):
            no_model.samples.append(Sample(no_model.name, {"reason": reason}, value))
        yield from (success, failure, no_model, count, executions, retries, pending)
        yield from (metric for metric, _ in durations)
        yield from self._histograms(models)
        yield from _custom(models)

    def _histograms(self, models: list[ModelStats]) -> Iterator[Metric]:
        for name, field, documentation in _HISTOGRAMS:
            family = Metric(name, documentation, "histogram")
            append = family.samples.append
            bucket, count, total = name + "_bucket", name + "_count", name + "_sum"
            for stats in models:
                histogram = getattr(stats, field)
                if not isinstance(histogram, Histogram):
                    continue
                labels = {"model": stats.name, "version": stats.version}
                counts = list(histogram.buckets)  # one copy: consistent if the loop adds meanwhile
                running = 0
                for le, value in zip(_le_labels(histogram.bounds_ns), counts, strict=True):
                    running += value
                    append(Sample(bucket, {**labels, "le": le}, running))
                append(Sample(count, labels, running))
                append(Sample(total, labels, histogram.ns / 1e6))
            yield family


def _custom(models: list[ModelStats]) -> Iterator[Metric]:
    """The metrics models define themselves (Triton's pb_utils.MetricFamily), with their own
    labels only, as Triton exports them; a family two models define is one family."""
    families: dict[str, Metric] = {}
    for stats in models:
        for name, (kind, documentation, series) in list(stats.custom.items()):
            family = families.get(name)
            if family is None:
                family = families[name] = Metric(name, documentation, kind)
            elif family.type != kind:
                continue  # the first model's kind wins: a family has one type
            for labels, value in list(series.items()):
                family.samples.append(Sample(name, dict(labels), value))
    yield from families.values()


@functools.lru_cache(maxsize=8)
def _le_labels(bounds_ns: tuple[int, ...]) -> tuple[str, ...]:
    """Prometheus "le" values of the bucket bounds (ms), the last one +Inf."""
    return (*(floatToGoString(bound / 1e6) for bound in bounds_ns), "+Inf")


class DeviceCollector(Collector):
    """Triton's CPU and GPU gauges, from a ``DeviceSampler``."""

    def __init__(self, sampler: DeviceSampler) -> None:
        self.sampler = sampler

    def collect(self) -> Iterator[Metric]:
        cpu = self.sampler.cpu()
        utilization = GaugeMetricFamily(
            "nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0] since the last scrape"
        )
        utilization.add_metric([], cpu.utilization)
        total = GaugeMetricFamily("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes")
        total.add_metric([], cpu.memory_total_bytes)
        used = GaugeMetricFamily("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes")
        used.add_metric([], cpu.memory_used_bytes)
        yield from (utilization, total, used)
        gpus = self.sampler.gpus()
        if not gpus:
            return
        for reading, name, documentation in _GPU_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["gpu_uuid"])
            for gpu in gpus:
                if reading in gpu.readings:
                    family.add_metric([gpu.uuid], gpu.readings[reading])
            yield family


_GPU_GAUGES = (  # (GpuUsage reading, metric, help)
    ("utilization", "nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0]"),
    ("memory_total_bytes", "nv_gpu_memory_total_bytes", "GPU total memory, in bytes"),
    ("memory_used_bytes", "nv_gpu_memory_used_bytes", "GPU used memory, in bytes"),
    ("power_watts", "nv_gpu_power_usage", "GPU power usage, in watts"),
)


# ------------------------------------------------------------------------------ exposition


def build_registry(
    dataplane: DataPlane, *, devices: bool = True, process: bool = True
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelStatsCollector(dataplane))
    if devices:
        registry.register(DeviceCollector(DeviceSampler()))
    if process:
        ProcessCollector(registry=registry)
    return registry


def render(metrics: Iterable[Metric]) -> bytes:
    """Prometheus text format 0.0.4, Triton style: a counter's HELP/TYPE name is its samples'
    name (Triton's counters have no ``_total``; prometheus_client's own ones keep theirs)."""
    lines: list[str] = []
    append = lines.append
    label_text: dict[tuple[tuple[str, str], ...], str] = {}  # models repeat their labels
    for metric in metrics:
        name, kind = metric.name, metric.type
        if kind == "counter" and metric.samples and metric.samples[0].name != name:
            name = metric.samples[0].name
        elif kind == "unknown":
            kind = "untyped"
        help_text = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
        append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")
        for sample in metric.samples:
            key = tuple(sample.labels.items())
            text = label_text.get(key)
            if text is None:
                text = label_text[key] = _labels(sample.labels)
            value = sample.value
            value_text = str(value) if type(value) is int else _value(value)
            append(f"{sample.name}{text} {value_text}\n")
    return "".join(lines).encode()


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _value(value: float) -> str:
    if type(value) is int:
        return str(value)  # counters stay exact integers, as Triton prints them
    if math.isfinite(value) and value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return floatToGoString(value)


def generate(registry: CollectorRegistry) -> bytes:
    return render(registry.collect())


# ------------------------------------------------------------------------------ endpoint


class MetricsServer:
    """``GET /metrics`` (and HEAD) on the project's ``HttpServer``: the scrape renders on a
    worker thread while the event loop keeps serving inference."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="accelserve-metrics")
        self._http = HttpServer(self.handle, _text, MAX_BODY_BYTES, keep_alive_header=True)
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        try:
            await self._http.start(host, port)
        except OSError as exc:
            raise UnavailableError(
                f"the metrics endpoint cannot listen on {host}:{port} ({exc.strerror}); choose "
                f"another --metrics-port, or 0 to disable metrics"
            ) from None
        self.port = self._http.port

    async def stop(self) -> None:
        await self._http.stop()
        self._executor.shutdown(wait=True)

    async def handle(self, request: Request) -> Response:
        try:
            expect_method(request.method, ("GET", "HEAD"), request.path)
        except MethodNotAllowedError as exc:
            status, headers, body = _text(http_status(exc), exc.message)
            return status, headers + exc.allow_header(), body
        if request.path != "/metrics":
            return _text(404, "metrics are at /metrics")
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._executor, generate, self.registry)
        return 200, [(b"content-type", CONTENT_TYPE)], body


def _text(status: int, message: str) -> Response:
    return status, [(b"content-type", b"text/plain; charset=utf-8")], message.encode() + b"\n"


async def start_metrics_server(
    dataplane: DataPlane,
    host: str,
    port: int,
    latency_buckets_ms: Sequence[float] | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` and switch on latency histograms for every model (loaded or not)."""
    server = await metrics_for(dataplane, latency_buckets_ms)
    await server.start(host, port)
    log.info("metrics at http://%s:%d/metrics", host, server.port)
    return server


async def metrics_for(
    dataplane: DataPlane, latency_buckets_ms: Sequence[float] | None = None
) -> MetricsServer:
    """The metrics of ``dataplane``, not yet listening (``handle`` answers a scrape; a Ray
    replica mounts it on its own server), with latency histograms switched on for every model."""
    buckets = latency_buckets_from_env() if latency_buckets_ms is None else latency_buckets_ms
    bounds = _enable_histograms(buckets)
    for stats in dataplane.version_stats(ready_only=False):
        stats.enable_histograms(bounds)
    registry = await asyncio.to_thread(build_registry, dataplane)  # NVML init can take a while
    return MetricsServer(registry)
