"""``--metrics-port`` with ``--ray``: the forwarder answers a scrape with the cluster's
``/metrics`` (here a real HTTP server standing in for Ray's proxy), and says clearly when it
cannot."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from accelserve.deploy.metrics_port import MetricsForwarder
from accelserve.errors import UnavailableError
from tests.ray_cluster import free_port

EXPOSITION = b'# TYPE up gauge\nup{node="n1",replica="r1"} 1\n'


class Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = (200, EXPOSITION) if self.path == "/metrics" else (503, b"no replica\n")
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def forwarder(upstream: str) -> MetricsForwarder:
    return MetricsForwarder("127.0.0.1", 0, upstream)


def test_a_scrape_gets_the_clusters_exposition(upstream: str) -> None:
    metrics = forwarder(f"{upstream}/metrics")
    try:
        response = httpx.get(f"http://127.0.0.1:{metrics.port}/metrics", timeout=30)
        assert response.status_code == 200
        assert response.content == EXPOSITION
        assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert httpx.get(f"http://127.0.0.1:{metrics.port}/v2", timeout=30).status_code == 404
    finally:
        metrics.stop()


def test_the_upstreams_error_status_is_passed_on(upstream: str) -> None:
    metrics = forwarder(f"{upstream}/elsewhere")
    try:
        response = httpx.get(f"http://127.0.0.1:{metrics.port}/metrics", timeout=30)
        assert (response.status_code, response.content) == (503, b"no replica\n")
    finally:
        metrics.stop()


def test_an_unreachable_cluster_is_a_503_naming_it() -> None:
    address = f"http://127.0.0.1:{free_port()}/metrics"  # nothing listens there
    metrics = forwarder(address)
    try:
        response = httpx.get(f"http://127.0.0.1:{metrics.port}/metrics", timeout=30)
        assert response.status_code == 503
        assert f"the cluster's /metrics ({address}) did not answer" in response.text
    finally:
        metrics.stop()


def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UnavailableError, match=f"cannot listen on 127.0.0.1:{port}") as info:
            MetricsForwarder("127.0.0.1", port, "http://127.0.0.1:1/metrics")
    assert "another --metrics-port, or 0 to disable metrics" in str(info.value)
