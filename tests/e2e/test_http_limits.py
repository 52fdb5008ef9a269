"""The HTTP limits and load shedding through the real server process: oversized request heads
(414, 431), slow heads and stalled bodies (408) while other clients are served, the bound on
request bodies in flight, and many concurrent clients against a small queue bound getting only
correct 200s and clean 503s with Retry-After (UNAVAILABLE over gRPC)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import ServerProcess
from tests.e2e.test_http_protocol import INFER, ROW, Conn, _post, _sums

SUMS = [2 * x for x in ROW]
INFER_PATH = "/v2/models/simple/infer"


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory, simple_repository: Path
) -> Iterator[ServerProcess]:
    """`simple` whose dynamic batcher holds a lone request for 1 s (a batch fills at 8 rows, and
    the queue bound of 4 never lets it): a queue that fills on demand, whatever the machine."""
    repository = tmp_path_factory.mktemp("limits") / "models"
    shutil.copytree(simple_repository / "simple", repository / "simple")
    config = repository / "simple" / "config.pbtxt"
    text = config.read_text()
    assert "dynamic_batching { }" in text
    config.write_text(
        text.replace(
            "dynamic_batching { }", "dynamic_batching { max_queue_delay_microseconds: 1000000 }"
        )
    )
    process = ServerProcess(
        repository,
        "--default-max-queue-size", "4",
        "--http-max-url-bytes", "4096",
        "--http-max-header-line-bytes", "4096",
        "--http-max-header-bytes", "16384",
        "--http-max-headers", "50",
        "--http-header-timeout-s", "1",
        "--http-body-timeout-s", "1",
        "--max-body-bytes", "1048576",
        "--http-max-body-in-flight-bytes", "1572864",  # 1.5 MiB: one 1 MiB body at a time
    )  # fmt: skip
    yield process
    process.stop()


def refused(conn: Conn, status: int) -> tuple[dict[str, str], dict[str, str]]:
    code, headers, body = conn.response()
    assert code == status, body
    assert headers["connection"] == "close"
    assert conn.closed_by_server()
    return headers, json.loads(body)


def send_all(conn: Conn, data: bytes) -> None:
    """Send everything: the server reads (and drops) what follows a refused head."""
    conn.sock.sendall(data)


def served(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base}{INFER_PATH}", content=INFER, timeout=30)
    assert response.status_code == 200 and _sums(response.content) == SUMS


@pytest.mark.parametrize(
    ("request_bytes", "status", "message"),
    [
        (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request target of"),
        (
            b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 100_000 + b"\r\n\r\n",
            431,
            "header line 'x-big'|request head of",
        ),
        (
            b"GET / HTTP/1.1\r\nX-Big: " + b"v" * (1 << 20) + b"\r\n\r\n",
            431,
            "header line 'x-big'|request head of",
        ),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n", 431, "header line 'x-big'"),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(10_000)) + b"\r\n",
            431,
            "more than 50 header lines",
        ),
    ],
    ids=["url-100KB", "header-line-100KB", "header-line-1MiB", "header-line-5KB", "10000-headers"],
)
def test_oversized_heads_are_refused(
    limited: ServerProcess, request_bytes: bytes, status: int, message: str
) -> None:
    before = refused_count(limited)
    conn = Conn(limited)
    send_all(conn, request_bytes)
    _, body = refused(conn, status)
    assert re.match(message, body["error"]), body  # a head read whole or cut short
    conn.close()
    served(limited)
    assert refused_count(limited) == before + 1  # counted, though it named no model


def refused_count(server: ServerProcess) -> float:
    """The server-wide count of requests rejected before naming a model, from /metrics."""
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).text
    sample = 'accelserve_inference_request_failure_no_model{reason="REJECTED"}'
    lines = [line for line in text.splitlines() if line.startswith(sample)]
    assert lines, text
    return float(lines[0].split()[-1])


def test_slow_header_client_is_closed_while_others_are_served(limited: ServerProcess) -> None:
    slow = Conn(limited)
    slow.sock.settimeout(0.05)
    head = b"POST " + INFER_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 1000
    answer = b""
    sent = 0
    deadline = time.monotonic() + 30
    while not answer and time.monotonic() < deadline:
        if sent < len(head):
            slow.sock.sendall(head[sent : sent + 1])  # one byte at a time
            sent += 1
        try:
            answer = slow.sock.recv(65536)
        except TimeoutError:
            served(limited)  # other clients are served all along
    assert sent < len(head), "the slow client sent its whole head before being answered"
    slow.buffer = answer
    slow.sock.settimeout(10)
    _, body = refused(slow, 408)
    assert body == {"error": "request head not received within 1.0 s"}
    slow.close()
    served(limited)


def test_stalled_body_is_408(limited: ServerProcess) -> None:
    conn = Conn(limited)
    conn.send(_post(INFER_PATH, INFER)[: -len(INFER) // 2])  # half the body, then nothing
    _, body = refused(conn, 408)
    assert body == {"error": "request body stalled for over 1.0 s"}
    conn.close()


def test_bodies_in_flight_past_the_bound_are_503(limited: ServerProcess) -> None:
    big = INFER + b" " * ((1 << 20) - len(INFER))  # 1 MiB: valid JSON padded with spaces
    holder = Conn(limited)
    holder.send(_post(INFER_PATH, big, "Expect: 100-continue")[: -len(big)])
    while b"\r\n\r\n" not in holder.buffer:  # its 1 MiB is reserved once 100 Continue comes
        assert holder._fill()
    assert holder.buffer.startswith(b"HTTP/1.1 100 Continue")
    holder.buffer = b""
    other = Conn(limited)
    other.send(_post(INFER_PATH, big))  # 2 MiB together: over the bound of 1.5 MiB
    status, headers, body = other.response()
    assert (status, headers["retry-after"]) == (503, "1")
    assert "1048576 bytes of request bodies in flight" in json.loads(body)["error"]
    holder.send(big)
    status, _, body = holder.response()
    assert status == 200 and _sums(body) == SUMS
    other.send(_post(INFER_PATH, big))  # the same connection, now that there is room
    status, _, body = other.response()
    assert status == 200 and _sums(body) == SUMS
    holder.close()
    other.close()


def test_many_clients_against_a_small_queue_get_200s_or_clean_503s(
    limited: ServerProcess,
) -> None:
    async def client(http: httpx.AsyncClient, results: list[httpx.Response]) -> None:
        for _ in range(4):
            results.append(await http.post(INFER_PATH, content=INFER))

    async def main() -> list[httpx.Response]:
        results: list[httpx.Response] = []
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=limited.base, limits=limits, timeout=60) as http:
            await asyncio.gather(*(client(http, results) for _ in range(64)))
        return results

    results = asyncio.run(main())
    statuses = {r.status_code for r in results}
    assert statuses <= {200, 503}, statuses
    ok = [r for r in results if r.status_code == 200]
    shed = [r for r in results if r.status_code == 503]
    assert ok and shed  # the queue of 4 held some while the rest were shed at once
    for r in ok:
        assert _sums(r.content) == SUMS
    for r in shed:
        assert r.headers["retry-after"] == "1"
        error = r.json()["error"]
        assert error.startswith("Exceeds maximum queue size: model 'simple'")
        assert "--default-max-queue-size 4" in error


def test_queue_full_over_grpc_is_unavailable(limited: ServerProcess) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{limited.grpc_port}")
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = grpcclient.InferInput(name, [1, 16], "INT32")
        tensor.set_data_from_numpy(np.arange(16, dtype=np.int32).reshape(1, 16))
        inputs.append(tensor)
    outcomes: list[object] = []
    all_done = threading.Event()

    def done(result: object, error: object) -> None:
        outcomes.append(error if error is not None else result)
        if len(outcomes) == 8:
            all_done.set()

    for _ in range(8):  # four fill the queue (held 1 s), the others find it full
        client.async_infer("simple", inputs, done)
    assert all_done.wait(30)
    errors = [o for o in outcomes if isinstance(o, InferenceServerException)]
    assert len(outcomes) == 8 and len(errors) >= 4
    for error in errors:
        assert error.status() == "StatusCode.UNAVAILABLE"
        assert "Exceeds maximum queue size" in error.message()
    client.close()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--http-max-headers", "0", "--http-max-headers: expected > 0; received 0"),
        ("--http-header-timeout-s", "-1", "--http-header-timeout-s: expected > 0; received -1.0"),
        ("--default-max-queue-size", "-1", "--default-max-queue-size: expected >= 0"),
    ],
)
def test_options_are_validated(
    simple_repository: Path, option: str, value: str, message: str
) -> None:
    with pytest.raises(RuntimeError, match=message):
        ServerProcess(simple_repository, option, value)


def test_a_client_that_sends_nothing_is_closed_unanswered(limited: ServerProcess) -> None:
    """A client that connects and sends nothing is closed after the head timeout, unanswered."""
    sock = socket.create_connection(("127.0.0.1", limited.http_port), timeout=10)
    assert sock.recv(1) == b""
    sock.close()
    served(limited)
