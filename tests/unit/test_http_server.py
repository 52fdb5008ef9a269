"""HttpServer in process, over real sockets: large responses, handler failures, pipelining past
the read-pause threshold, the idle keep-alive timeout and the graceful stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from accelserve.frontends.http_limits import HttpLimits
from accelserve.frontends.http_server import Handler, HttpServer, Request, Response

uvloop = pytest.importorskip("uvloop")
BIG = bytes(range(256)) * 4096  # 1 MiB


class SlowGate:
    """``/slow`` holds its answer until the test releases it: a slow handler the test controls."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()  # the handler is running
        self.release = asyncio.Event()  # the handler may answer


class FakeClock:
    """The server's idle clock: time moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._read = asyncio.Event()

    def __call__(self) -> float:
        self._read.set()
        return self.now

    async def next_read(self) -> None:
        """Wait until the server reads the clock again (on an idle connection: its sweep)."""
        self._read.clear()
        await self._read.wait()


def render_error(status: int, message: str) -> Response:
    return status, [(b"content-type", b"text/plain")], message.encode()


def make_handler(gate: SlowGate | None = None) -> Handler:
    async def handler(request: Request) -> Response:
        if request.path == "/big":
            return 200, [], BIG
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        if request.path == "/slow":
            assert gate is not None, "/slow needs a gate"
            gate.entered.set()
            await gate.release.wait()
        return 200, [(b"x-path", request.path.encode())], request.body or request.path.encode()

    return handler


async def start(
    gate: SlowGate | None = None,
    keep_alive_s: float = 60.0,
    clock: FakeClock | None = None,
    keep_alive_header: bool = False,
    limits: HttpLimits | None = None,
) -> HttpServer:
    server = HttpServer(
        make_handler(gate),
        render_error,
        max_body_bytes=1 << 20,
        limits=limits or HttpLimits(keep_alive_s=keep_alive_s),
        keep_alive_header=keep_alive_header,
        clock=clock or FakeClock(),  # idle time moves only when a test moves it
    )
    await server.start("127.0.0.1", 0)
    return server


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.lower()] = value.strip()
    body = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, body


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()


def test_large_response_and_a_failing_handler() -> None:
    async def main() -> None:
        server = await start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(get("/big") + get("/boom") + get("/after"))
        status, _, body = await read_response(reader)
        assert status == 200 and body == BIG
        status, _, body = await read_response(reader)
        assert status == 500 and body == b"internal server error"  # no traceback
        status, headers, body = await read_response(reader)
        assert status == 200 and body == b"/after" and headers["x-path"] == "/after"
        writer.close()
        await server.stop()

    uvloop.run(main())


def test_many_pipelined_requests_past_the_read_pause() -> None:
    async def main() -> None:
        server = await start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"".join(get(f"/r{i}") for i in range(200)))
        bodies = [(await read_response(reader))[2] for _ in range(200)]
        assert bodies == [f"/r{i}".encode() for i in range(200)]
        writer.close()
        await server.stop()

    uvloop.run(main())


def test_idle_keep_alive_connections_are_closed() -> None:
    async def main() -> None:
        clock = FakeClock()
        server = await start(keep_alive_s=0.05, clock=clock)  # a sweep every 0.05 s
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            writer.write(get("/a"))
            assert (await read_response(reader))[0] == 200
            clock.now += 0.04  # idle, but not for keep_alive_s yet
            await clock.next_read()  # a sweep has looked at the connection and kept it
            writer.write(get("/b"))
            status, _, body = await read_response(reader)
            assert status == 200 and body == b"/b"  # still open
            clock.now += 0.06  # now idle past keep_alive_s since /b
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
            assert not server.connections
        finally:  # a failure above must not leave the loop with a live server
            writer.close()
            await server.stop()

    uvloop.run(main())


def test_stop_answers_requests_in_flight_and_closes_idle_connections() -> None:
    async def main() -> None:
        gate = SlowGate()
        server = await start(gate)
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", server.port)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", server.port)
        idle_w.write(get("/warm"))
        await read_response(idle_r)
        busy_w.write(get("/slow") + get("/queued"))  # the second is pipelined behind
        await gate.entered.wait()  # /slow is being answered
        stopping = asyncio.ensure_future(server.stop())
        assert await asyncio.wait_for(idle_r.read(), 1) == b""  # idle: closed at once
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", server.port)  # no longer accepting
        assert not stopping.done()  # still answering /slow
        gate.release.set()
        status, headers, body = await read_response(busy_r)
        assert status == 200 and body == b"/slow" and "connection" not in headers
        status, headers, body = await read_response(busy_r)
        assert body == b"/queued" and headers["connection"] == "close"
        await asyncio.wait_for(stopping, 2)
        assert await busy_r.read() == b""
        busy_w.close()
        idle_w.close()

    uvloop.run(main())


def test_keep_alive_header_when_asked() -> None:
    async def main() -> None:
        server = await start(keep_alive_header=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(get("/a") + get("/b", "Connection: close\r\n"))
        assert (await read_response(reader))[1]["connection"] == "keep-alive"
        assert (await read_response(reader))[1]["connection"] == "close"
        writer.close()
        await server.stop()

    uvloop.run(main())


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="max_body_bytes"):
        HttpServer(make_handler(), render_error, max_body_bytes=0)
    with pytest.raises(ValueError, match="keep_alive_s"):
        HttpLimits(keep_alive_s=0)


async def read_chunked(reader: asyncio.StreamReader) -> list[bytes]:
    """The chunks of a chunked body, up to its terminating empty chunk."""
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
        data = await reader.readexactly(size + 2)
        if size == 0:
            return chunks
        chunks.append(data[:-2])


def test_streamed_body_is_chunked_and_a_gone_client_stops_it() -> None:
    async def main() -> None:
        step = asyncio.Event()
        stopped = asyncio.Event()

        async def events(count: int) -> AsyncIterator[bytes]:
            try:
                for i in range(count):
                    if count > 2 and i == 1:
                        await step.wait()  # the endless stream waits for the test here
                    yield b"data: %d\n\n" % i
            finally:
                stopped.set()

        async def handler(request: Request) -> Response:
            count = 1000 if request.path == "/endless" else 2
            return 200, [(b"content-type", b"text/event-stream")], events(count)

        server = HttpServer(handler, render_error, max_body_bytes=1 << 20, clock=FakeClock())
        await server.start("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(get("/two") + get("/after"))
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"transfer-encoding: chunked" in head and b"text/event-stream" in head
            assert await read_chunked(reader) == [b"data: 0\n\n", b"data: 1\n\n"]
            head = await reader.readuntil(b"\r\n\r\n")  # the pipelined request is answered next
            assert await read_chunked(reader) == [b"data: 0\n\n", b"data: 1\n\n"]
            stopped.clear()
            writer.write(get("/endless"))
            await reader.readuntil(b"\r\n\r\n")
            assert await reader.readuntil(b"\r\n") == b"9\r\n"  # the first chunk's size
            assert await reader.readexactly(11) == b"data: 0\n\n\r\n"
            writer.close()  # the client goes away mid-stream: the iteration is cancelled
            await asyncio.wait_for(stopped.wait(), 5)
            assert not step.is_set()
        finally:
            await server.stop()

    uvloop.run(main())
