"""The HTTP server's limits: what one client may ask of it before it is answered with the
standard refusal instead of served, so that one client can never take another's share.

- a request target longer than ``max_url_bytes``: 414, then close;
- one header line over ``max_header_line_bytes``, all header lines together over
  ``max_header_bytes``, or more than ``max_headers`` of them: 431, then close;
- a request head not received within ``header_timeout_s`` of its start (a new connection's
  start counts: a client that connects and sends nothing is timed too), or a body that stalls
  ``body_timeout_s`` between two reads: 408, then close (slow clients: "slowloris");
- more than ``max_connections`` open connections: a new one is still accepted (a connection
  left unaccepted waits in the kernel's backlog and its client learns nothing), its request
  head is read and answered 503 with ``Retry-After``, then it is closed;
- request bodies in flight (received or being received, held until their answer is written)
  over ``max_body_in_flight_bytes`` across the server: 503 with ``Retry-After``, decided from
  Content-Length before any of the body is read; the body is then read and dropped, so the
  client sees the answer (closing with unread data would reset the connection under it) and
  its connection stays usable; a client that sent ``Expect: 100-continue`` is answered at
  once instead, and the connection closed;
- a kept-alive connection idle for ``keep_alive_s``: closed.

Every timeout is measured with the server's injectable clock and checked by its sweep.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

RETRY_AFTER_S = 1  # what a 503 for load tells the client to wait (Retry-After, seconds)
RETRY_AFTER = (b"retry-after", b"%d" % RETRY_AFTER_S)  # the header every 503 carries
# The server's queue bound for every model whose config sets no max_queue_size (Triton's default
# is unbounded): past it a request is answered 503 (gRPC UNAVAILABLE) at once instead of waiting
# behind the others. Not HTTP's alone, but a limit of the same kind, kept where the command line
# can read it without importing the scheduler (and numpy).
DEFAULT_MAX_QUEUE_SIZE = 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-server HTTP limits; each is an ``accelserve serve --http-<name>`` option (``HELP``)."""

    max_url_bytes: int = 8192
    max_header_line_bytes: int = 8192
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keep_alive_s: float = 60.0
    max_connections: int = 4096
    max_body_in_flight_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ValueError(f"{f.name}: expected > 0; received {value}")


HELP = {
    "max_url_bytes": "longest request target (URL) in bytes; longer: 414",
    "max_header_line_bytes": "longest header line (name and value) in bytes; longer: 431",
    "max_header_bytes": "most bytes of header lines in one request; more: 431",
    "max_headers": "most header lines in one request; more: 431",
    "header_timeout_s": "seconds to receive a request's head; slower: 408 and close",
    "body_timeout_s": "seconds a request body may stall between two reads; longer: 408 and close",
    "keep_alive_s": "seconds an idle kept-alive connection stays open",
    "max_connections": "open connections served; beyond: 503 with Retry-After, then close",
    "max_body_in_flight_bytes": "bytes of request bodies held at once across the server; "
    "beyond: 503 with Retry-After",
}


class Refusal(Exception):
    """A request the server answers itself with ``status`` (raised from parser callbacks)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodyBudget:
    """Bytes of request bodies held across the server, bounded by ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def reserve(self, size: int) -> Refusal | None:
        """Take ``size`` bytes, or return the 503 that refuses them (nothing taken)."""
        if self.held + size > self.limit:
            return Refusal(
                503,
                f"server busy: {self.held} bytes of request bodies in flight, a body of {size} "
                f"more would pass the limit of {self.limit} bytes; retry after "
                f"{RETRY_AFTER_S} s",
            )
        self.held += size
        return None

    def release(self, size: int) -> None:
        self.held -= size


def head_refusal(
    limits: HttpLimits, url: bytes, headers: list[tuple[bytes, bytes]], head_bytes: int
) -> Refusal | None:
    """The 414 or 431 for a request head received so far (``head_bytes``: its header lines'
    bytes), or None while it is within limits. Checked as each piece arrives."""
    if len(url) > limits.max_url_bytes:
        return Refusal(
            414,
            f"request target of {len(url)}+ bytes exceeds the limit of "
            f"{limits.max_url_bytes} bytes",
        )
    if not headers:
        return None
    if len(headers) > limits.max_headers:
        return Refusal(431, f"more than {limits.max_headers} header lines (the limit)")
    name, value = headers[-1]
    line = len(name) + len(value) + 2  # "name: value"
    if line > limits.max_header_line_bytes:
        return Refusal(
            431,
            f"header line '{name[:64].decode('latin-1')}' of {line} bytes exceeds the limit of "
            f"{limits.max_header_line_bytes} bytes",
        )
    if head_bytes > limits.max_header_bytes:
        return Refusal(
            431,
            f"header lines of {head_bytes}+ bytes exceed the limit of "
            f"{limits.max_header_bytes} bytes",
        )
    return None
