"""``--metrics-port`` with ``--ray``: the cluster's ``/metrics`` where Prometheus expects it.

The cluster's exposition is the router's (every replica's text, labelled by node and replica:
``deploy.fanout``), reached through Ray's proxy on the HTTP port; the command also serves it on
the metrics port, as a single server does, by asking the proxy on each scrape.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from accelserve.errors import UnavailableError

SCRAPE_TIMEOUT_S = 30.0


class MetricsForwarder:
    """A small HTTP server (its own thread) answering ``GET /metrics`` with ``upstream``."""

    def __init__(self, host: str, port: int, upstream: str) -> None:
        handler = type("Handler", (_Handler,), {"upstream": upstream})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UnavailableError(
                f"the metrics endpoint cannot listen on {host}:{port} ({exc.strerror}); choose "
                f"another --metrics-port, or 0 to disable metrics"
            ) from None
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="accelserve-metrics", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    upstream = ""

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self._answer(404, "text/plain; charset=utf-8", b"metrics are at /metrics\n")
            return
        try:
            with urllib.request.urlopen(self.upstream, timeout=SCRAPE_TIMEOUT_S) as response:
                kind = response.headers.get("content-type", "text/plain")
                self._answer(response.status, kind, response.read())
        except urllib.error.HTTPError as exc:
            self._answer(exc.code, exc.headers.get("content-type", "text/plain"), exc.read())
        except (OSError, TimeoutError) as exc:
            text = f"the cluster's /metrics ({self.upstream}) did not answer: {exc}\n"
            self._answer(503, "text/plain; charset=utf-8", text.encode())

    def _answer(self, status: int, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # scrapes are not worth a log line each
