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
that do not parse, ``Expect: 100-continue``, ``Connection: close``, HEAD (headers only), the
limits of ``http_limits`` (414, 431, 408, 503 with Retry-After; idle keep-alive connections
closed after ``keep_alive_s``), write back-pressure, and a graceful stop: stop accepting, close
idle connections, answer every request already received, then close.
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

from accelserve.frontends.http_limits import (
    RETRY_AFTER,
    RETRY_AFTER_S,
    BodyBudget,
    HttpLimits,
    Refusal,
    head_refusal,
)

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
_SWEEP_S = 1.0  # how often connections are looked at for their timeouts (at most)
# Request head bytes buffered before the parser has called back at all (it holds a header line
# whole before handing it over): past this, the head is refused without waiting for the line.
_HEAD_SLACK = 4096
_LINGER_S = 2.0  # how long a refused client may go on sending after its answer


_Error = tuple[int, str] | None  # a request answered with this error instead of the handler


class HttpServer:
    """Serves ``handler`` on one listening socket until ``stop()``."""

    def __init__(
        self,
        handler: Handler,
        render_error: ErrorRenderer,
        max_body_bytes: int,
        limits: HttpLimits | None = None,
        on_response: Callable[[], None] | None = None,
        on_refused: Callable[[int], None] | None = None,
        keep_alive_header: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes: expected >= 1; received {max_body_bytes}")
        limits = HttpLimits() if limits is None else limits
        if limits.max_body_in_flight_bytes < max_body_bytes:
            raise ValueError(
                f"max_body_in_flight_bytes: expected >= max_body_bytes ({max_body_bytes}), or no "
                f"body that large is ever admitted; received {limits.max_body_in_flight_bytes}"
            )
        self.handler = handler
        self.render_error = render_error
        self.max_body_bytes = max_body_bytes
        self.limits = limits
        self.bodies = BodyBudget(limits.max_body_in_flight_bytes)
        self.admitted = 0  # connections within max_connections
        self._head_guard = limits.max_url_bytes + limits.max_header_bytes + _HEAD_SLACK
        self.on_response = on_response  # called after each response is written (busy polling)
        # called with the status of each request refused before it reached the handler (a
        # malformed message, a head too large or too slow, a connection or body cap): counted
        self.on_refused = on_refused
        # Responses that keep the connection say so when asked (HTTP/1.1 needs no header for
        # it, and the hot path saves the bytes); a closing one always says "close".
        self.keep_alive_tail = (
            b"content-length: %d\r\nconnection: keep-alive\r\n\r\n"
            if keep_alive_header
            else b"content-length: %d\r\n\r\n"
        )
        self.clock = clock  # for the timeouts; tests pass a fake one
        self._sweep_s = min(
            _SWEEP_S, limits.keep_alive_s, limits.header_timeout_s / 2, limits.body_timeout_s / 2
        )
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
            if not connection.busy():  # a request being answered is the server's time
                connection.check_timeouts(now)
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_s, self._sweep)

    def _closed(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and answers them one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.clock = server.clock
        self.last_active = self.clock()  # last bytes received or answer written
        self.head_since = self.last_active  # when the head being awaited began (timeouts)
        self.admitted = False  # within max_connections (else its request is refused)
        self.kept_idle = False  # answered all it sent; waiting for the next request
        # The message being received.
        self.receiving = False
        self.head_done = False  # its headers are complete: the body is being received
        # Bytes of the head being received, counted by whole reads that fell inside it (the
        # parser holds an unfinished header line, unseen by the callbacks, until it ends).
        self.head_raw = 0
        self.began = False  # a message began during the current read
        self.url = b""
        self.headers: Headers = []
        self.head_bytes = 0
        self.chunks: list[bytes] = []
        self.size = 0
        self.reserved = 0  # bytes of the server's body budget held for this message
        self.refusal: Refusal | None = None  # answer it with this, dropping its body
        self.method = ""
        # Received requests waiting for the one before them to be answered.
        self.queue: deque[tuple[Request, bool, _Error]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False  # close once the queue is answered
        self.broken = False  # the parser failed: nothing more is parsed
        self.lingering_since: float | None = None  # answered a broken request, then half-closed
        self.write_paused = False
        self.read_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        server = self.server
        server.connections.add(self)
        if server.admitted < self.limits.max_connections:
            server.admitted += 1
            self.admitted = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._drop_partial()
        self._clear_queue()
        if self.task is not None:  # the client has gone: its request is cancelled (and a
            self.task.cancel()  # request still in a model's queue leaves it, never computed)
        if self.admitted:
            self.admitted = False
            self.server.admitted -= 1
        self.server._closed(self)

    def data_received(self, data: bytes) -> None:
        if self.broken:
            return  # the parser stopped at an error; the connection closes after answering
        self.last_active = self.clock()
        in_head = self.receiving and not self.head_done
        self.began = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.closing = True  # what follows is not HTTP/1.1: answer, then close
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, Refusal):
                self._reject(exc.__context__.status, exc.__context__.message)
            else:
                log.error("HTTP parser callback failed", exc_info=exc.__context__)
                self._reject(500, "internal server error")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")
        else:
            # Only a read wholly inside one head is counted: one that began it may hold the end
            # of the message before (a body), and is at most one read of the head uncounted.
            if in_head and not self.began and not self.head_done and not self.broken:
                self.head_raw += len(data)
                if self.head_raw > self.server._head_guard:
                    status = 414 if len(self.url) > self.limits.max_url_bytes else 431
                    self._reject(
                        status, f"request head of {self.head_raw}+ bytes exceeds the limits"
                    )

    def eof_received(self) -> bool:
        """The client closed its side: close ours, which cancels a request still being handled
        (``connection_lost``).

        A client that sent a request and closed its socket cannot be told from one that only
        half-closed and still reads: TCP shows both as a FIN, and nearly every client that
        sends one before its answer has gone (timed out, aborted). So, as Go's net/http and
        nginx do, the request is given up rather than computed for nobody."""
        self.receiving = False
        self._drop_partial()
        return False  # the transport closes itself

    def pause_writing(self) -> None:
        self.write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._resume_reading()

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.kept_idle:  # a kept-alive connection's next request: its head is timed anew
            self.kept_idle = False
            self.head_since = self.clock()
        self.receiving = True
        self.began = True
        self.head_done = False
        self.head_raw = 0
        self.url = b""
        self.headers = []
        self.head_bytes = 0
        self.chunks = []
        self.size = 0
        self.refusal = None

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_url_bytes:
            raise _refusal(self.limits, self.url, [], 0)

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        headers.append((name.lower(), value))
        size = len(name) + len(value)
        self.head_bytes += size + 4  # "name: value\r\n"
        limits = self.limits
        if (  # the cheap test on the hot path; head_refusal says which limit and how
            size + 2 > limits.max_header_line_bytes
            or self.head_bytes > limits.max_header_bytes
            or len(headers) > limits.max_headers
        ):
            raise _refusal(limits, self.url, headers, self.head_bytes)

    def on_headers_complete(self) -> None:
        self.head_done = True
        self.method = self.parser.get_method().decode("ascii")
        limit = self.server.max_body_bytes
        expect_continue = False
        length = 0
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit():
                length = int(value)
                if length > limit:
                    raise Refusal(
                        413, f"request body of {length} bytes exceeds the limit of {limit} bytes"
                    )
            if name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        if not self.admitted:
            self.refusal = Refusal(
                503,
                f"server busy: {self.limits.max_connections} connections open (the limit); "
                f"retry after {RETRY_AFTER_S} s",
            )
        elif length:
            self.refusal = self.server.bodies.reserve(length)
            if self.refusal is None:
                self.reserved = length
        if self.refusal is not None:
            if expect_continue:  # the client waits to send its body: answer now, then close
                raise self.refusal
            return  # the body is read and dropped, then the refusal answered
        if expect_continue and self.transport is not None:
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self.refusal is not None:
            return
        self.size += len(body)
        if self.size > self.server.max_body_bytes:
            raise Refusal(
                413, f"request body exceeds the limit of {self.server.max_body_bytes} bytes"
            )
        if self.size > self.reserved:  # a chunked body: its size is learnt as it comes
            self.refusal = self.server.bodies.reserve(self.size - self.reserved)
            if self.refusal is not None:
                self._drop_partial()
                return
            self.reserved = self.size
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.receiving = False
        self.head_done = False
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.reserved = 0  # now held by the request, released once it is answered
        keep_alive = self.parser.should_keep_alive()
        refusal = self.refusal
        if refusal is not None:
            self.refusal = None
            request = Request(self.method, "", b"", [], b"")
            self._enqueue(request, keep_alive and self.admitted, (refusal.status, refusal.message))
            return
        request = Request(self.method, *_split_url(self.url), self.headers, body)
        self._enqueue(request, keep_alive, None)

    # -- answering ---------------------------------------------------------------------------

    async def _serve(self, request: Request, keep_alive: bool, error: _Error) -> None:
        """Answer ``request``, then every request queued behind it, in order."""
        server = self.server
        while True:
            if error is not None:
                response = server.render_error(*error)
                if server.on_refused is not None:
                    server.on_refused(error[0])
                if error[0] == 503:  # load, not a fault: say when to come back
                    response = response[0], [*response[1], RETRY_AFTER], response[2]
            else:
                try:
                    response = await server.handler(request)
                except asyncio.CancelledError:  # connection_lost: nobody to answer
                    self.task = None
                    server.bodies.release(len(request.body))
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
                    server.bodies.release(len(request.body))
                    raise
            server.bodies.release(len(request.body))
            if not self.queue or self.transport is None:
                break
            request, keep_alive, error = self.queue.popleft()
            if self.read_paused and not self.write_paused:
                self._resume_reading()
        self.task = None
        self.last_active = self.head_since = self.clock()
        self.kept_idle = not self.receiving
        if self.closing and not self.receiving and self.lingering_since is None:
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
            self._clear_queue()
            if self.broken and transport.can_write_eof():
                self._linger(transport)
            else:
                transport.close()
        if self.server.on_response is not None:
            self.server.on_response()

    def _reject(self, status: int, message: str) -> None:
        """A request that cannot be read: answer it after those before it, then close."""
        self.broken = True
        self.receiving = False
        self.closing = True
        self._drop_partial()
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

    def _linger(self, transport: asyncio.Transport) -> None:
        """After refusing a request the client may still be sending (a body, an endless
        header): half-close, and read and drop what still comes until the client closes or
        ``_LINGER_S`` passes. Closing at once with unread bytes would reset the connection,
        and the client would lose the answer (RFC 9112, 9.6)."""
        self.lingering_since = self.clock()
        transport.write_eof()
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()

    def _drop_partial(self) -> None:
        """The message being received will never be answered: free its share of the budget."""
        self.chunks = []
        if self.reserved:
            self.server.bodies.release(self.reserved)
            self.reserved = 0

    def _clear_queue(self) -> None:
        """Requests received but never to be answered: free their bodies' budget."""
        for request, _, _ in self.queue:
            self.server.bodies.release(len(request.body))
        self.queue.clear()

    # -- state -------------------------------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        """The sweep, on a connection with no request being answered: 408 for a head or body
        received too slowly, close one kept idle too long (or one that never sent a byte)."""
        limits = self.limits
        if self.lingering_since is not None:
            if now - self.lingering_since > _LINGER_S:
                self.close()
        elif self.receiving and self.head_done:
            if now - self.last_active > limits.body_timeout_s:
                self._reject(408, f"request body stalled for over {limits.body_timeout_s} s")
        elif not self.kept_idle:
            if now - self.head_since > limits.header_timeout_s:
                if self.receiving:
                    self._reject(
                        408, f"request head not received within {limits.header_timeout_s} s"
                    )
                else:
                    self.close()  # connected and sent nothing
        elif now - self.last_active > limits.keep_alive_s:
            self.close()

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


def _refusal(limits: HttpLimits, url: bytes, headers: Headers, head_bytes: int) -> Refusal:
    """The refusal of a head known to be past a limit."""
    refusal = head_refusal(limits, url, headers, head_bytes)
    assert refusal is not None
    return refusal


def _split_url(url: bytes) -> tuple[str, bytes]:
    """(percent-decoded path, raw query) of a request target."""
    if not url.startswith(b"/"):  # absolute form (through a proxy) or '*'
        parsed = httptools.parse_url(url)
        path, query = parsed.path or b"/", parsed.query or b""
    else:
        path, _, query = url.partition(b"?")
    text = path.decode("latin-1")
    return (unquote(text) if "%" in text else text), query
