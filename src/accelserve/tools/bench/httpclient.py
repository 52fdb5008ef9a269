"""A minimal keep-alive HTTP/1.1 client on asyncio's Protocol API, for the load generator.

Why not aiohttp: on the 2-core machine the load generator competes with the server for CPU, so
every microsecond the client spends per request lowers the throughput it can measure. A request
here is one prebuilt bytes object written to the socket and one httptools (llhttp, C) parse of
the response. Measured against Triton's `simple` (binary tensors, uvloop, same machine): this
client spends 13 us of CPU per request at 16 connections and 24 us at 1; aiohttp 3.14 spends 87
and 143 us, and reached 3-4x fewer requests/s.

One connection carries one request at a time (no pipelining), like perf_analyzer's HTTP client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools


class HttpError(Exception):
    """The connection failed, closed, timed out, or the response did not parse."""


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, want_headers: bool = False) -> None:
        self._loop = loop
        self._transport: Any = None  # asyncio.Transport (uvloop's does not subclass it)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}
        if want_headers:  # httptools looks its callbacks up once, when the parser is made
            self.on_header = self._on_header
            self.on_message_begin = self.headers.clear
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self._reusable = True

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(HttpError(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            reason = f": {exc}" if exc else ""
            waiter.set_exception(HttpError(f"connection closed by the server{reason}"))

    # --- httptools callbacks
    def _on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._reusable = self._parser.should_keep_alive()
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body))

    # --- use
    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    def send(self, payload: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Write one whole request; the future gets (status, body) of its response."""
        fut: asyncio.Future[tuple[int, bytes]] = self._loop.create_future()
        if self.closed or not self._reusable or self._transport is None:
            fut.set_exception(HttpError("connection is closed"))
            return fut
        self._waiter = fut
        self._transport.write(payload)
        return fut

    def expire(self, timeout: float) -> None:
        self._fail(HttpError(f"no response within {timeout:g} s"))


class HttpConnection:
    """One keep-alive connection that reconnects after a failure."""

    def __init__(self, host: str, port: int, timeout: float, want_headers: bool = False) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._want_headers = want_headers
        self._conn: _Connection | None = None
        self.connects = 0

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop, self._want_headers), self.host, self.port
                ),
                self.timeout,
            )
        except (TimeoutError, OSError) as exc:
            # A refused connection fails at once: pause so a dead server is not hammered in a
            # tight loop (failed requests are counted, their latency is not measured).
            await asyncio.sleep(0.01)
            raise HttpError(
                f"cannot connect to {self.host}:{self.port}: {str(exc) or 'timed out'}"
            ) from None
        self.connects += 1
        return conn

    async def request(self, payload: bytes) -> tuple[int, bytes]:
        conn = self._conn
        if conn is None or conn.closed or not conn._reusable:
            if conn is not None:
                conn.close()
            conn = self._conn = await self._open()
        fut = conn.send(payload)
        # One timer per request: cheaper than asyncio.wait_for's extra task and cancellation.
        timer = conn._loop.call_later(self.timeout, conn.expire, self.timeout)
        try:
            return await fut
        finally:
            timer.cancel()

    @property
    def headers(self) -> dict[bytes, bytes]:
        return self._conn.headers if self._conn is not None else {}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def build_request(
    method: str,
    path: str,
    host: str,
    body: bytes = b"",
    headers: dict[str, Any] | None = None,
) -> bytes:
    """The complete bytes of one HTTP/1.1 request (built once, sent many times)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
