"""Busy polling in the real server: after HTTP traffic stops the server goes back to sleep (no
CPU), and a negative window is refused with a clear error before any model loads."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import ServerProcess
from tests.e2e.test_http_protocol import INFER, Conn, _post


def test_server_sleeps_once_traffic_stops(simple_repository: Path) -> None:
    # A 20 ms window: long enough that a poller which never stopped would be plain to see.
    server = ServerProcess(simple_repository, "--busy-poll-us", "20000")
    try:
        conn = Conn(server)
        for _ in range(200):
            conn.send(_post("/v2/models/simple/infer", INFER))
            assert conn.response()[0] == 200
        process = psutil.Process(server.process.pid)
        time.sleep(0.1)  # the window closes
        before = process.cpu_times()
        time.sleep(1.0)
        after = process.cpu_times()
        busy = (after.user - before.user) + (after.system - before.system)
        assert busy < 0.2, f"an idle server used {busy:.2f} s of CPU in 1 s"
        conn.send(_post("/v2/models/simple/infer", INFER))  # and wakes for the next request
        assert conn.response()[0] == 200
        conn.close()
    finally:
        server.stop()


def test_negative_window_is_refused(simple_repository: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = subprocess.run(
        [sys.executable, "-m", "accelserve.cli", "serve", "--model-repository",
         str(simple_repository), "--http-port", str(port), "--grpc-port", "0",
         "--metrics-port", "0", "--busy-poll-us", "-1"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "busy_poll_us: expected >= 0; received -1" in done.stderr
    assert "Traceback" not in done.stderr
