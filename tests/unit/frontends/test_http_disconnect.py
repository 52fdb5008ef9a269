"""HttpServer in process, over real sockets: a client that goes away (closes its socket, or
only its sending side) while its request is handled has the handler cancelled, and the requests
it pipelined behind are dropped unanswered; other connections are not disturbed."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from accelserve.frontends.http_server import HttpServer, Request, Response

uvloop = pytest.importorskip("uvloop")


class Handler:
    """``/hold`` waits until the test releases it, and records whether it was cancelled."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()
        self.seen: list[str] = []

    async def __call__(self, request: Request) -> Response:
        self.seen.append(request.path)
        if request.path == "/hold":
            self.entered.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return 200, [], request.path.encode()


def render_error(status: int, message: str) -> Response:
    return status, [], message.encode()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def served(handler: Handler) -> HttpServer:
    server = HttpServer(handler, render_error, max_body_bytes=1 << 20)
    await server.start("127.0.0.1", 0)
    return server


@pytest.mark.parametrize("how", ["close", "half-close", "reset"])
def test_a_client_that_goes_away_has_its_request_cancelled(how: str) -> None:
    async def main() -> None:
        handler = Handler()
        server = await served(handler)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(get("/hold") + get("/behind"))  # /behind waits its turn
            await handler.entered.wait()
            if how == "half-close":
                writer.write_eof()  # FIN, still reading: cannot be told from a close
            else:
                if how == "reset":  # an abortive close: RST instead of FIN
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()
            await handler.cancelled.wait()
            if how == "half-close":
                assert await reader.read() == b""  # closed without an answer
            while server.connections:  # connection_lost has run (the loop's next turn)
                await asyncio.sleep(0)
            assert handler.seen == ["/hold"]  # the pipelined request was never handled
            # the server goes on serving others
            reader2, writer2 = await asyncio.open_connection("127.0.0.1", server.port)
            writer2.write(get("/next"))
            assert (await reader2.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            writer2.close()
        finally:
            writer.close()
            await server.stop()

    uvloop.run(main())
