"""A small HTTP/1.1 server: httptools' parser (llhttp, the parser uvicorn uses) under an
``asyncio.Protocol``, handing each complete request to one async handler.

Why not an ASGI server: on `simple` (16 connections, 2 cores shared with the load generator)
the event loop is the bottleneck, and uvicorn's generic ASGI cycle (scope dict, receive/send
message dicts, header validation, a second socket write for each body) was about as much of it
as our V2 decode, scheduling and encode together (py-spy, 2026-11-24). Here a request is one
small object and a response one ``transport.write``: the server's CPU per request went from
~67 to ~53 us and throughput from ~12k to ~15k req/s on that machine, before the other hot-path
work (results in docs/PERFORMANCE.md, `server-simple`).

What it implements: keep-alive (HTTP/1.1's default; HTTP/1.0 with ``Connection:
keep-alive``), pipelined requests answered in order, Content-Length and chunked request bodies,
a request's handler cancelled when its client disconnects (or closes its side),
413 past the body limit (before reading the body when Content-Length says so), 400 on requests
that do not parse, ``Expect: 100-continue``, ``Connection: close``, HEAD (headers only), idle
keep-alive connections closed after ``keep_alive_s``, write back-pressure, and a graceful stop:
stop accepting, close idle connections, answer every request already received, then close.
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import unquote

import httptools

log = logging.getLogger("accelserve.http")

Headers = list[tuple[bytes, bytes]]
# A body is bytes, or (server-sent events) an async iterator of chunks sent as they come, with
# chunked transfer encoding; the client going away cancels the iteration.
Response = tuple[int, Headers, bytes | AsyncIterator[bytes]]


class Request:
    """One HTTP request: method and path as text, lower-cased header names, the whole body."""

    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, method: str, path: str, query: bytes, headers: Headers, body: bytes):
        self.method = method
        self.path = path  # percent-decoded, without the query string
        self.query = query
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes | None:
        """The first value of header ``name`` (lower case), or None."""
        for key, value in self.headers:
            if key == name:
                return value
        return None


Handler = Callable[[Request], Awaitable[Response]]
# Renders the server's own errors (400, 413, 500) in the application's error format.
ErrorRenderer = Callable[[int, str], Response]

_STATUS_LINES = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_MAX_PIPELINE = 32  # requests received ahead of their turn before reading pauses
_SINGLE_WRITE = 64 * 1024  # smaller bodies are copied behind the head: one buffer, one send
_SWEEP_S = 5.0  # how often idle connections are looked for (at most)


_Error = tuple[int, str] | None  # a request answered with this error instead of the handler


class _TooLarge(Exception):
    pass


class HttpServer:
    """Serves ``handler`` on one listening socket until ``stop()``."""

    def __init__(
        self,
        handler: Handler,
        render_error: ErrorRenderer,
        max_body_bytes: int,
        keep_alive_s: float = 60.0,
        on_response: Callable[[], None] | None = None,
        keep_alive_header: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes: expected >= 1; received {max_body_bytes}")
        if not keep_alive_s > 0:
            raise ValueError(f"keep_alive_s: expected > 0 seconds; received {keep_alive_s}")
        self.handler = handler
        self.render_error = render_error
        self.max_body_bytes = max_body_bytes
        self.keep_alive_s = keep_alive_s
        self.on_response = on_response  # called after each response is written (busy polling)
        # Responses that keep the connection say so when asked (HTTP/1.1 needs no header for
        # it, and the hot path saves the bytes); a closing one always says "close".
        self.keep_alive_tail = (
            b"content-length: %d\r\nconnection: keep-alive\r\n\r\n"
            if keep_alive_header
            else b"content-length: %d\r\n\r\n"
        )
        self.clock = clock  # idle time for keep-alive; tests pass a fake one
        self._sweep_s = min(_SWEEP_S, keep_alive_s)
        self.stopping = False
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._all_closed: asyncio.Event | None = None
        self.port = 0

    async def start(self, host: str, port: int, backlog: int = 4096) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=backlog, reuse_address=True
        )
        self.port = int(self._server.sockets[0].getsockname()[1])  # the one bound (port 0)
        self._sweeper = loop.call_later(self._sweep_s, self._sweep)

    async def stop(self) -> None:
        """Stop accepting; answer every request already received; close every connection."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.shutdown()
        if self.connections:
            self._all_closed = asyncio.Event()
            await self._all_closed.wait()
        if self._sweeper is not None:
            self._sweeper.cancel()

    def _sweep(self) -> None:
        now = self.clock()
        for connection in list(self.connections):
            if not connection.busy() and now - connection.last_active > self.keep_alive_s:
                connection.close()
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)

    def _closed(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.clock = server.clock
        self.last_active = self.clock()
        # The message being received.
        self.receiving = False
        self.url = b""
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.method = ""
        # Received requests waiting for the one before them to be answered.
        self.queue: deque[tuple[Request, bool, _Error]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False  # close once the queue is answered
        self.broken = False  # the parser failed: nothing more is read
        self.write_paused = False
        self.read_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.queue.clear()
        if self.task is not None:  # the client has gone: its request is cancelled (and a
            self.task.cancel()  # request still in a model's queue leaves it, never computed)
        self.server._closed(self)

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return  # the parser stopped at an error; the connection closes after answering
        self.last_active = self.clock()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # what follows is not HTTP/1.1: answer, then close
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _TooLarge):
                self._reject(413, str(exc.__context__))
            else:
                log.error("HTTP parser callback failed", exc_info=exc.__context__)
                self._reject(500, "internal server error")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")

    def eof_received(self) -> bool:
        """The client closed its side: close ours, which cancels a request still being handled
        (``connection_lost``).

        A client that sent a request and closed its socket cannot be told from one that only
        half-closed and still reads: TCP shows both as a FIN, and nearly every client that
        sends one before its answer has gone (timed out, aborted). So, as Go's net/http and
        nginx do, the request is given up rather than computed for nobody."""
        self.receiving = False
        return False  # the transport closes itself

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume_reading()

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.receiving = True
        self.url = b""
        self.headers = []
        self.chunks = []
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.method = self.parser.get_method().decode("ascii")
        limit = self.server.max_body_bytes
        expect_continue = False
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _TooLarge(
                    f"request body of {int(value)} bytes exceeds the limit of {limit} bytes"
                )
            if name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        if expect_continue and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.server.max_body_bytes:
            raise _TooLarge(f"request body exceeds the limit of {self.server.max_body_bytes} bytes")
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.receiving = False
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        request = Request(self.method, *_split_url(self.url), self.headers, body)
        self._enqueue(request, self.parser.should_keep_alive(), None)

    # -- answering ---------------------------------------------------------------------------

    async def _serve(self, request: Request, keep_alive: bool, error: _Error) -> None:
        """Answer ``request``, then every request queued behind it, in order."""
        server = self.server
        while True:
            if error is not None:
                response = server.render_error(*error)
            else:
                try:
                    response = await server.handler(request)
                except asyncio.CancelledError:  # connection_lost: nobody to answer
                    self.task = None
                    raise
                except Exception:  # the handler maps its own errors; this is a last resort
                    log.exception("unhandled error on %s %s", request.method, request.path)
                    response = server.render_error(500, "internal server error")
            status, headers, body = response
            if isinstance(body, bytes):
                self._write(request.method, (status, headers, body), keep_alive)
            else:
                try:
                    await self._write_stream(status, headers, body, keep_alive)
                except asyncio.CancelledError:
                    self.task = None
                    raise
            if not self.queue or self.transport is None:
                break
            request, keep_alive, error = self.queue.popleft()
            if self.read_paused and not self.write_paused:
                self._resume_reading()
        self.task = None
        self.last_active = self.clock()
        if self.closing and not self.receiving:
            self.close()

    async def _write_stream(
        self, status: int, headers: Headers, body: AsyncIterator[bytes], keep_alive: bool
    ) -> None:
        head = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
        head += [b"%s: %s\r\n" % (name, value) for name, value in headers]
        head.append(b"transfer-encoding: chunked\r\n")
        if not keep_alive:
            head.append(b"connection: close\r\n")
        if self.transport is None:
            return
        self.transport.write(b"".join(head) + b"\r\n")
        async for chunk in body:
            if self.transport is None:
                return
            if chunk:
                self.transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
            if not keep_alive:
                self.closing = True
                self.queue.clear()
                self.transport.close()

    def _write(self, method: str, response: tuple[int, Headers, bytes], keep_alive: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        status, headers, body = response
        head = [_STATUS_LINES.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status]
        for name, value in headers:
            head.append(b"%s: %s\r\n" % (name, value))
        if not keep_alive or (self.closing and not self.queue):
            keep_alive = False
            head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        else:
            head.append(self.server.keep_alive_tail % len(body))
        if method == "HEAD":
            transport.write(b"".join(head))
        elif len(body) <= _SINGLE_WRITE:
            head.append(body)
            transport.write(b"".join(head))
        else:
            transport.writelines((b"".join(head), body))
        if not keep_alive:
            self.closing = True
            self.queue.clear()
            transport.close()
        if self.server.on_response is not None:
            self.server.on_response()

    def _reject(self, status: int, message: str) -> None:
        """A request that cannot be read: answer it after those before it, then close."""
        self.broken = True
        self.receiving = False
        self.closing = True
        self._pause_reading()
        self._enqueue(Request(self.method or "GET", "", b"", [], b""), False, (status, message))

    def _enqueue(self, request: Request, keep_alive: bool, error: _Error) -> None:
        if self.task is None:
            loop = asyncio.get_running_loop()
            self.task = loop.create_task(self._serve(request, keep_alive, error))
        else:
            self.queue.append((request, keep_alive, error))
            if len(self.queue) >= _MAX_PIPELINE:
                self._pause_reading()

    # -- state -------------------------------------------------------------------------------

    def busy(self) -> bool:
        """A received request is not answered yet."""
        return self.task is not None or bool(self.queue)

    def shutdown(self) -> None:
        """Server stop: close now if idle, else after answering what was received (a request
        still arriving is answered too; the idle sweep ends one that stalls)."""
        self.closing = True
        if not self.busy() and not self.receiving:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = False
            self.transport.resume_reading()


def _split_url(url: bytes) -> tuple[str, bytes]:
    """(percent-decoded path, raw query) of a request target."""
    if not url.startswith(b"/"):  # absolute form (through a proxy) or '*'
        parsed = httptools.parse_url(url)
        path, query = parsed.path or b"/", parsed.query or b""
    else:
        path, _, query = url.partition(b"?")
    text = path.decode("latin-1")
    return (unquote(text) if "%" in text else text), query
