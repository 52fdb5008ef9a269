"""HttpServer's limits in process, over real sockets, with a fake clock for the timeouts: 414,
431, 408 for slow heads and stalled bodies (while other clients are served), the connection
limit and the server-wide bound on request bodies in flight (503 with Retry-After)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from accelserve.frontends.http_limits import HttpLimits
from accelserve.frontends.http_server import HttpServer
from tests.unit.test_http_server import FakeClock, SlowGate, get, read_response, start

uvloop = pytest.importorskip("uvloop")

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def run(
    body: Callable[[HttpServer, FakeClock], Awaitable[None]],
    gate: SlowGate | None = None,
    **limits: float,
) -> None:
    """Start a server with ``limits``, run ``body``, always stop the server."""

    async def main() -> None:
        clock = FakeClock()
        server = await start(gate, clock=clock, limits=HttpLimits(**limits))  # type: ignore[arg-type]
        try:
            await body(server, clock)
        finally:
            await asyncio.wait_for(server.stop(), 5)

    uvloop.run(main())


async def connect(server: HttpServer) -> Streams:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def refused(reader: asyncio.StreamReader, status: int) -> tuple[dict[str, str], bytes]:
    """The next response is ``status`` with ``connection: close``, then the server closes."""
    code, headers, body = await asyncio.wait_for(read_response(reader), 5)
    assert code == status, body
    assert headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    return headers, body


async def served(server: HttpServer, path: str = "/ok") -> None:
    """Another client is served normally, on a fresh connection."""
    reader, writer = await connect(server)
    writer.write(get(path))
    status, _, body = await read_response(reader)
    assert (status, body) == (200, path.encode())
    writer.close()


def post(path: str, length: int, extra: str = "") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


# -- sizes: 414 and 431 ------------------------------------------------------------------


def test_a_long_url_is_414() -> None:
    async def body(server: HttpServer, clock: FakeClock) -> None:
        reader, writer = await connect(server)
        writer.write(get("/" + "a" * 200))
        _, message = await refused(reader, 414)
        assert message.startswith(b"request target of") and b"limit of 100 bytes" in message
        writer.close()
        await served(server, "/" + "a" * 99)  # at the limit: served

    run(body, max_url_bytes=100)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ("X-Big: " + "v" * 300 + "\r\n", b"header line 'x-big' of 307 bytes exceeds"),
        ("".join(f"X-{i}: v\r\n" for i in range(20)), b"more than 10 header lines"),
        ("".join(f"X-{i}: {'v' * 90}\r\n" for i in range(8)), b"header lines of 5"),
    ],
    ids=["one-line-too-long", "too-many-lines", "too-many-bytes"],
)
def test_header_limits_are_431(headers: str, message: bytes) -> None:
    async def body(server: HttpServer, clock: FakeClock) -> None:
        reader, writer = await connect(server)
        writer.write(get("/h", headers))
        assert message in (await refused(reader, 431))[1]
        writer.close()
        await served(server)

    run(body, max_header_line_bytes=256, max_headers=10, max_header_bytes=512)


def test_a_huge_header_line_is_431_before_it_is_whole() -> None:
    """The parser holds a header line until it ends: the server refuses one that goes on past
    its limits without waiting for (or buffering) the rest of it."""

    async def body(server: HttpServer, clock: FakeClock) -> None:
        reader, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nX-Endless: ")
        writer.write(b"v" * (1 << 20))  # 1 MiB of one header value, never ended
        # Answered although the client was still sending: the server half-closes and drops
        # what still comes, instead of resetting the connection under the answer.
        assert b"request head of" in (await refused(reader, 431))[1]
        await asyncio.wait_for(writer.drain(), 5)  # all of it was read (and dropped)
        writer.close()

    run(body, max_url_bytes=1024, max_header_bytes=4096, max_header_line_bytes=4096)


def test_bodies_in_the_same_reads_as_heads_are_not_counted_as_head() -> None:
    """A read holding whole requests (head and a body far larger than the head limits), or the
    end of one body and the start of the next head, is not a head past its limits."""

    async def body(server: HttpServer, clock: FakeClock) -> None:
        reader, writer = await connect(server)
        payloads = [bytes([65 + i]) * 50_000 for i in range(3)]
        for i, payload in enumerate(payloads):  # one by one: each read may hold a whole request
            writer.write(post(f"/one{i}", len(payload)) + payload)
            status, _, answer = await asyncio.wait_for(read_response(reader), 5)
            assert (status, answer) == (200, payload)
        writer.write(b"".join(post(f"/p{i}", len(p)) + p for i, p in enumerate(payloads)))
        for payload in payloads:  # pipelined: reads hold a body's end and the next head
            status, _, answer = await asyncio.wait_for(read_response(reader), 5)
            assert (status, answer) == (200, payload)
        writer.close()

    run(body, max_url_bytes=1024, max_header_bytes=4096, max_header_line_bytes=4096)


# -- timeouts: 408 -----------------------------------------------------------------------


def test_a_slow_head_is_408_while_other_clients_are_served() -> None:
    async def body(server: HttpServer, clock: FakeClock) -> None:
        slow_r, slow_w = await connect(server)
        silent_r, silent_w = await connect(server)  # connects and sends nothing
        for byte in b"GET /slow-head HTTP/1.1\r\nHost: x\r\n":  # one byte at a time
            slow_w.write(bytes([byte]))
            await slow_w.drain()
            clock.now += 0.004  # 0.136 s for the 34 bytes: each soon after the one before
            await served(server)  # others are served throughout
        clock.now += 0.07  # 0.206 s since the slow client connected
        headers, message = await refused(slow_r, 408)
        assert message == b"request head not received within 0.2 s"
        assert "retry-after" not in headers  # the client's pace, not the server's load
        assert await asyncio.wait_for(silent_r.read(), 5) == b""  # closed without an answer
        await served(server)
        slow_w.close()
        silent_w.close()

    run(body, header_timeout_s=0.2)  # the sweep runs every 0.1 s


def test_a_kept_alive_connection_times_its_next_head_from_its_start() -> None:
    async def body(server: HttpServer, clock: FakeClock) -> None:
        reader, writer = await connect(server)
        writer.write(get("/first"))
        assert (await read_response(reader))[0] == 200
        clock.now += 30.0  # idle, within keep-alive, far past the header timeout
        writer.write(b"GET /second HTTP/1.1\r\n")  # the head begins now
        await writer.drain()
        for _ in range(4):  # reading it, then sweeps that look at the half-received head
            await clock.next_read()
        writer.write(b"Host: x\r\n\r\n")
        status, _, answer = await read_response(reader)
        assert (status, answer) == (200, b"/second")
        writer.close()

    run(body, header_timeout_s=0.2, keep_alive_s=60.0)


def test_a_stalled_body_is_408_and_a_moving_one_is_not() -> None:
    async def body(server: HttpServer, clock: FakeClock) -> None:
        reader, writer = await connect(server)
        writer.write(post("/moving", 4) + b"ab")
        await writer.drain()
        for _ in range(3):
            await clock.next_read()  # the server has read the head and the first bytes
        clock.now += 0.15  # under body_timeout_s since the last bytes
        writer.write(b"c")
        await writer.drain()
        for _ in range(3):
            await clock.next_read()
        clock.now += 0.15  # 0.3 s since the body began, 0.15 s since its last byte
        writer.write(b"d")
        status, _, answer = await read_response(reader)
        assert (status, answer) == (200, b"abcd")
        writer.write(post("/stalled", 4) + b"ab")
        await writer.drain()
        for _ in range(3):
            await clock.next_read()
        clock.now += 0.25
        assert (await refused(reader, 408))[1] == b"request body stalled for over 0.2 s"
        assert server.bodies.held == 0  # the stalled body's share is free again
        writer.close()

    run(body, body_timeout_s=0.2)  # the sweep runs every 0.1 s


# -- load: 503 with Retry-After ----------------------------------------------------------


def test_connections_past_the_limit_are_answered_503_and_closed() -> None:
    async def body(server: HttpServer, clock: FakeClock) -> None:
        kept = [await connect(server) for _ in range(2)]
        for reader, writer in kept:  # both accepted and served
            writer.write(get("/kept"))
            assert (await read_response(reader))[0] == 200
        reader, writer = await connect(server)
        writer.write(get("/third"))
        headers, message = await refused(reader, 503)
        assert headers["retry-after"] == "1"
        assert message == b"server busy: 2 connections open (the limit); retry after 1 s"
        writer.close()
        kept[0][1].close()  # one leaves: a new client gets its place
        await asyncio.wait_for(kept[0][0].read(), 5)
        while server.admitted > 1:  # the server sees the close on its next loop turns
            await clock.next_read()
        await served(server)
        reader, writer = kept[1]
        writer.write(get("/still"))  # the kept one is still served
        assert (await read_response(reader))[2] == b"/still"
        writer.close()

    run(body, max_connections=2, keep_alive_s=0.05)


def test_bodies_in_flight_past_the_bound_are_503_and_the_connection_stays_usable() -> None:
    gate = SlowGate()

    async def body(server: HttpServer, clock: FakeClock) -> None:
        held_r, held_w = await connect(server)
        held_w.write(post("/slow", 600_000) + b"x" * 600_000)
        await gate.entered.wait()  # its 600 kB body is held while it is answered
        assert server.bodies.held == 600_000
        reader, writer = await connect(server)
        writer.write(post("/second", 600_000) + b"y" * 600_000)  # 1.2 MB together: refused
        status, headers, message = await read_response(reader)
        assert (status, headers["retry-after"]) == (503, "1")
        assert b"600000 bytes of request bodies in flight" in message
        assert b"limit of 1100000 bytes" in message
        writer.write(post("/small", 4) + b"fits")  # same connection: its body was dropped
        assert (await read_response(reader))[2] == b"fits"
        chunked = b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunk = b"z" * 300_000
        writer.write(chunked + (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
        assert (await read_response(reader))[0] == 503  # learnt from the chunks as they came
        gate.release.set()
        assert (await read_response(held_r))[0] == 200
        writer.write(post("/second", 600_000) + b"y" * 600_000)  # room again
        assert (await read_response(reader))[0] == 200
        assert server.bodies.held == 0
        writer.close()
        held_w.close()

    run(body, gate, max_body_in_flight_bytes=1_100_000)


def test_a_client_expecting_100_continue_is_refused_before_it_sends_its_body() -> None:
    gate = SlowGate()

    async def body(server: HttpServer, clock: FakeClock) -> None:
        held_r, held_w = await connect(server)
        held_w.write(post("/slow", 600_000) + b"x" * 600_000)
        await gate.entered.wait()
        reader, writer = await connect(server)
        writer.write(post("/waits", 600_000, "Expect: 100-continue\r\n"))  # head only
        headers, message = await refused(reader, 503)
        assert headers["retry-after"] == "1" and message.startswith(b"server busy")
        gate.release.set()
        assert (await read_response(held_r))[0] == 200
        assert server.bodies.held == 0
        writer.close()
        held_w.close()

    run(body, gate, max_body_in_flight_bytes=1_100_000)


def test_a_client_gone_mid_body_frees_its_share() -> None:
    async def body(server: HttpServer, clock: FakeClock) -> None:
        _, writer = await connect(server)
        writer.write(post("/gone", 100_000) + b"x" * 1000)
        await writer.drain()
        while server.bodies.held == 0:  # the server has read the head and reserved the body
            await clock.next_read()
        writer.close()
        while server.connections:
            await clock.next_read()
        assert server.bodies.held == 0

    run(body, keep_alive_s=0.05)


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_headers: expected > 0; received 0"):
        HttpLimits(max_headers=0)
    with pytest.raises(ValueError, match=r"header_timeout_s: expected > 0; received -1"):
        HttpLimits(header_timeout_s=-1)
    with pytest.raises(ValueError, match=r"max_body_in_flight_bytes: expected >= max_body_bytes"):
        HttpServer(
            start,  # type: ignore[arg-type]  # never called
            lambda status, message: (status, [], b""),
            max_body_bytes=2048,
            limits=HttpLimits(max_body_in_flight_bytes=1024),
        )
