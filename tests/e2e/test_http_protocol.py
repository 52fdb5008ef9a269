"""HTTP/1.1 as raw bytes on a socket against the real server: keep-alive, pipelining, chunked
bodies, Expect: 100-continue, body limits, malformed requests, Connection: close, HTTP/1.0,
HEAD, and half-closed idle clients."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import ServerProcess

ROW = list(range(16))
INFER = json.dumps(
    {
        "inputs": [
            {"name": n, "datatype": "INT32", "shape": [1, 16], "data": ROW}
            for n in ("INPUT0", "INPUT1")
        ]
    }
).encode()


class Conn:
    """A raw client connection that reads whole responses (Content-Length bodies)."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a full response: {self.buffer!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed in the middle of a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def _post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _sums(body: bytes) -> list[int]:
    outputs = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
    return outputs["OUTPUT0"]


def test_keep_alive_serves_many_requests_on_one_connection(server: ServerProcess) -> None:
    conn = Conn(server)
    for _ in range(5):
        conn.send(_post("/v2/models/simple/infer", INFER))
        status, headers, body = conn.response()
        assert status == 200 and "connection" not in headers
        assert _sums(body) == [2 * x for x in ROW]
    conn.close()


def test_pipelined_requests_are_answered_in_order(server: ServerProcess) -> None:
    conn = Conn(server)
    requests = [
        _post("/v2/models/simple/infer", INFER),
        b"GET /v2/models/simple HTTP/1.1\r\nHost: x\r\n\r\n",
        _post("/v2/models/nope/infer", INFER),
        b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n",
        _post("/v2/models/simple/infer", INFER),
    ]
    conn.send(b"".join(requests))  # all in one segment
    statuses = []
    for _ in requests:
        status, _, body = conn.response()
        statuses.append(status)
    assert statuses == [200, 200, 404, 200, 200]
    assert _sums(body) == [2 * x for x in ROW]
    conn.close()


def test_chunked_request_body(server: ServerProcess) -> None:
    conn = Conn(server)
    pieces = [INFER[:10], INFER[10:50], INFER[50:]]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    conn.send(head + chunked[:7])  # the body arrives in several segments
    time.sleep(0.05)
    conn.send(chunked[7:])
    status, _, body = conn.response()
    assert status == 200
    assert _sums(body) == [2 * x for x in ROW]
    conn.close()


def test_expect_100_continue(server: ServerProcess) -> None:
    conn = Conn(server)
    head = (
        f"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(INFER)}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    conn.send(head)
    while b"\r\n\r\n" not in conn.buffer:
        assert conn._fill()
    interim, conn.buffer = conn.buffer.split(b"\r\n\r\n", 1)
    assert interim == b"HTTP/1.1 100 Continue"
    conn.send(INFER)
    status, _, body = conn.response()
    assert status == 200 and _sums(body) == [2 * x for x in ROW]
    conn.close()


def test_body_over_limit_is_413_before_the_body_is_sent(server: ServerProcess) -> None:
    conn = Conn(server)
    conn.send(
        b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n"
    )
    status, headers, body = conn.response()
    assert status == 413 and headers["connection"] == "close"
    assert "limit" in json.loads(body)["error"]
    assert conn.closed_by_server()
    conn.close()


def test_chunked_body_over_limit_is_413(tmp_path: Path, simple_repository: Path) -> None:
    process = ServerProcess(simple_repository, "--max-body-bytes", "1000")
    try:
        conn = Conn(process)
        conn.send(
            b"POST /v2/models/simple/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        conn.send(b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(5)))
        status, _, body = conn.response()
        assert status == 413 and "1000 bytes" in json.loads(body)["error"]
        conn.close()
        conn = Conn(process)  # still serving
        conn.send(_post("/v2/models/simple/infer", INFER))
        assert conn.response()[0] == 200
        conn.close()
    finally:
        process.stop()


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET /v2 HTTP/1.1\r\nBad Header\r\n\r\n",
    ],
)
def test_malformed_request_is_400_then_close(server: ServerProcess, raw: bytes) -> None:
    conn = Conn(server)
    conn.send(raw)
    status, headers, body = conn.response()
    assert status == 400 and headers["connection"] == "close"
    assert "malformed HTTP request" in json.loads(body)["error"]
    assert conn.closed_by_server()
    conn.close()


def test_connection_close_and_http10(server: ServerProcess) -> None:
    conn = Conn(server)
    conn.send(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, headers, _ = conn.response()
    assert status == 200 and headers["connection"] == "close"
    assert conn.closed_by_server()
    conn.close()
    conn = Conn(server)
    conn.send(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
    status, headers, _ = conn.response()
    assert status == 200 and headers["connection"] == "close"
    assert conn.closed_by_server()
    conn.close()


def test_head_has_headers_only_and_query_is_ignored(server: ServerProcess) -> None:
    conn = Conn(server)
    conn.send(b"HEAD /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    while b"\r\n\r\n" not in conn.buffer:
        assert conn._fill()
    head, conn.buffer = conn.buffer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 405")  # the route answers GET only, but no body follows
    conn.send(b"GET /v2/models/simple%5Fauto/ready?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = conn.response()
    assert status == 200 and json.loads(body) == {"ready": True}
    conn.close()


def test_half_closed_idle_client_is_closed(server: ServerProcess) -> None:
    # A FIN while a request is handled cancels it, as a close does: that case, which needs a
    # model held busy, is in test_cancellation_and_failures.py.
    conn = Conn(server)
    conn.send(_post("/v2/models/simple/infer", INFER))
    status, _, body = conn.response()
    assert status == 200 and _sums(body) == [2 * x for x in ROW]
    conn.sock.shutdown(socket.SHUT_WR)
    assert conn.closed_by_server()
    conn.close()
