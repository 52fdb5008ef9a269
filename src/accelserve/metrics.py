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
  ``..._compute_output_duration_us``;
- gauge ``nv_inference_pending_request_count``;
- histograms in milliseconds: ``nv_inference_first_response_histogram_ms`` (Triton's name; for
  a non-decoupled model the first response is the response, so this is request latency),
  ``accelserve_inference_queue_histogram_ms`` and ``accelserve_inference_compute_infer_histogram_ms``,
  with buckets from ``latency_buckets_ms`` or ``ACCELSERVE_METRICS_LATENCY_BUCKETS_MS`` ("0.5,1,5").

Device gauges, as Triton names them: ``nv_cpu_utilization`` (0..1), ``nv_cpu_memory_total_bytes``,
``nv_cpu_memory_used_bytes`` (psutil); with nvidia-ml-py and a GPU, per ``gpu_uuid``:
``nv_gpu_utilization`` (0..1), ``nv_gpu_memory_total_bytes``, ``nv_gpu_memory_used_bytes``,
``nv_gpu_power_usage`` (watts). Plus prometheus_client's ``process_*`` metrics.

The text is Prometheus' format 0.0.4 as Triton writes it: counters keep their names, without
the ``_total`` that prometheus_client's own renderer would add (dashboards query Triton's names).
Rendering runs on a worker thread, so a scrape never holds up the event loop's requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from accelserve.dataplane import DataPlane
from accelserve.errors import UnavailableError
from accelserve.stats import DEFAULT_LATENCY_BUCKETS_MS, Duration, Histogram, ModelStats
from accelserve.stats import enable_histograms as _enable_histograms

log = logging.getLogger("accelserve.metrics")

BUCKETS_ENV = "ACCELSERVE_METRICS_LATENCY_BUCKETS_MS"
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
FAILURE_REASONS = ("REJECTED", "CANCELED", "BACKEND", "OTHER")  # Triton's, always exported
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
            pending.add_metric([stats.name, stats.version], stats.pending)
            for metric, field in durations:
                duration: Duration = getattr(stats, field)
                metric.samples.append(Sample(metric.name, labels, duration.ns // 1000))
        yield from (success, failure, count, executions, pending)
        yield from (metric for metric, _ in durations)
        yield from self._histograms(models)

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


@functools.lru_cache(maxsize=8)
def _le_labels(bounds_ns: tuple[int, ...]) -> tuple[str, ...]:
    """Prometheus "le" values of the bucket bounds (ms), the last one +Inf."""
    return (*(floatToGoString(bound / 1e6) for bound in bounds_ns), "+Inf")


class DeviceCollector(Collector):
    """Triton's CPU and GPU gauges (GPUs through NVML, when nvidia-ml-py finds a driver)."""

    def __init__(self) -> None:
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement
        self._nvml: Any = _init_nvml()
        self._gpus: list[tuple[str, Any]] = []
        if self._nvml is not None:
            nvml = self._nvml
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                self._gpus.append((uuid.decode() if isinstance(uuid, bytes) else uuid, handle))

    def collect(self) -> Iterator[Metric]:
        utilization = GaugeMetricFamily(
            "nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0] since the last scrape"
        )
        utilization.add_metric([], psutil.cpu_percent(interval=None) / 100.0)
        memory = psutil.virtual_memory()
        total = GaugeMetricFamily("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes")
        total.add_metric([], memory.total)
        used = GaugeMetricFamily("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes")
        used.add_metric([], memory.total - memory.available)
        yield from (utilization, total, used)
        if self._gpus:
            yield from self._gpu_metrics()

    def _gpu_metrics(self) -> Iterator[Metric]:
        nvml = self._nvml
        families = {
            "util": GaugeMetricFamily(
                "nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0]", labels=["gpu_uuid"]
            ),
            "total": GaugeMetricFamily(
                "nv_gpu_memory_total_bytes", "GPU total memory, in bytes", labels=["gpu_uuid"]
            ),
            "used": GaugeMetricFamily(
                "nv_gpu_memory_used_bytes", "GPU used memory, in bytes", labels=["gpu_uuid"]
            ),
            "power": GaugeMetricFamily(
                "nv_gpu_power_usage", "GPU power usage, in watts", labels=["gpu_uuid"]
            ),
        }
        for uuid, handle in self._gpus:
            for key, read in _GPU_READINGS:
                try:
                    families[key].add_metric([uuid], read(nvml, handle))
                except nvml.NVMLError:  # e.g. power readings unsupported on this board
                    continue
        yield from families.values()


_GPU_READINGS: tuple[tuple[str, Callable[[Any, Any], float]], ...] = (
    ("util", lambda nvml, h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100.0),
    ("total", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).total),
    ("used", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).used),
    ("power", lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000.0),  # mW -> W
)


def _init_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver or no GPU here
        return None
    return pynvml


# ------------------------------------------------------------------------------ exposition


def build_registry(
    dataplane: DataPlane, *, devices: bool = True, process: bool = True
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelStatsCollector(dataplane))
    if devices:
        registry.register(DeviceCollector())
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


# ------------------------------------------------------------------------------ HTTP server


class MetricsServer:
    """A small asyncio HTTP/1.1 server for ``GET /metrics`` (keep-alive, no framework): the
    scrape renders on a worker thread while the event loop keeps serving inference."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="accelserve-metrics")
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
        except OSError as exc:
            raise UnavailableError(
                f"the metrics endpoint cannot listen on {host}:{port} ({exc.strerror}); choose "
                f"another --metrics-port, or 0 to disable metrics"
            ) from None
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):  # idle keep-alive connections
                task.cancel()
            await self._server.wait_closed()
        self._executor.shutdown(wait=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("metrics endpoint error")
        finally:
            self._connections.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection should close."""
        request_line = await reader.readline()
        if not request_line:
            return False
        keep_alive = request_line.rstrip().endswith(b"HTTP/1.1")  # HTTP/1.1's default
        while True:  # headers: only Connection matters here
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"connection":
                token = value.strip().lower()
                keep_alive = token == b"keep-alive" or (keep_alive and token != b"close")
        parts = request_line.split()
        method = parts[0] if parts else b""
        path = parts[1].split(b"?", 1)[0] if len(parts) > 1 else b""
        if method not in (b"GET", b"HEAD"):
            status, body, ctype = b"405 Method Not Allowed", b"only GET /metrics\n", b"text/plain"
        elif path == b"/metrics":
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(self._executor, generate, self.registry)
            status, ctype = b"200 OK", CONTENT_TYPE
        else:
            status, body, ctype = b"404 Not Found", b"metrics are at /metrics\n", b"text/plain"
        head = (
            b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: %s\r\n\r\n"
            % (
                status,
                ctype,
                len(body),
                b"keep-alive" if keep_alive else b"close",
            )
        )
        writer.write(head if method == b"HEAD" else head + body)
        await writer.drain()
        return keep_alive


async def start_metrics_server(
    dataplane: DataPlane,
    host: str,
    port: int,
    latency_buckets_ms: Sequence[float] | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` and switch on latency histograms for every model (loaded or not)."""
    buckets = latency_buckets_from_env() if latency_buckets_ms is None else latency_buckets_ms
    bounds = _enable_histograms(buckets)
    for stats in dataplane.version_stats(ready_only=False):
        stats.enable_histograms(bounds)
    registry = await asyncio.to_thread(build_registry, dataplane)  # NVML init can take a while
    server = MetricsServer(registry)
    await server.start(host, port)
    log.info("metrics at http://%s:%d/metrics", host, server.port)
    return server
