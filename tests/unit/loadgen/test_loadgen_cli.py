"""`accelserve bench` as a command: arguments, table, CSV, PNG and exit status.

The toy V2 server runs on its own event loop in a thread; the CLI runs its own loop, as it does
for a user.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import threading
from collections.abc import Iterator

import pytest
from loadgen_toy_server import ToyServer

from accelserve.tools.bench import cli


@pytest.fixture
def threaded_server(request) -> Iterator[ToyServer]:
    server = ToyServer(**getattr(request, "param", {}))
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(5)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_become_settings() -> None:
    s = cli.settings_from_args(
        _parse(["-m", "simple", "--concurrency", "1:8:x2", "-b", "4", "--shape", "X:3,4"])
    )
    assert (s.model, s.protocol, s.http_format) == ("simple", "http", "binary")
    assert s.concurrency == [1, 2, 4, 8] and s.request_rates is None
    assert s.batch_size == 4 and s.shapes == {"X": (3, 4)}
    r = cli.settings_from_args(_parse(["-m", "m", "--request-rate", "50.5,100", "-n", "20"]))
    assert r.request_rates == [50.5, 100.0] and r.concurrency is None and r.requests == 20
    assert cli.settings_from_args(_parse(["-m", "m"])).concurrency == [1]
    with pytest.raises(SystemExit):  # argparse: the two load modes exclude each other
        _parse(["-m", "m", "--concurrency", "1", "--request-rate", "5"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "0"], "--concurrency: expected a positive value"),
        (["--duration", "0"], "--duration must be > 0 seconds, got 0.0"),
        (["-n", "0"], "--requests must be >= 1, got 0"),
        (["--url", "grpc://h:1"], "--url says grpc:// but --protocol is http"),
        (["--url", "h:port"], "--url: port must be a number, got 'port'"),
        (["--shape", "X"], "--shape 'X': expected NAME:d1,d2"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(argv, message, capsys) -> None:
    assert cli.run(_parse(["-m", "simple", "-q", *argv])) == 2
    assert message in capsys.readouterr().err


def test_run_writes_table_csv_and_png(threaded_server, tmp_path, capsys) -> None:
    csv_path, png_path = tmp_path / "out.csv", tmp_path / "out.png"
    argv = ["-m", "simple", "-u", f"127.0.0.1:{threaded_server.port}", "--concurrency", "1,2"]
    argv += ["-d", "0.3", "--warmup", "0.1", "--csv", str(csv_path), "--png", str(png_path)]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("model 'simple' at http://127.0.0.1:")
    assert lines[1].split()[:3] == ["conc", "req/s", "ok"]
    assert "concurrency 2:" in err  # progress went to stderr, one line per step
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["level"] for r in rows] == ["1", "2"]
    for row in rows:
        assert int(row["requests"]) > 0 and row["failed"] == "0"
        assert row["server_requests"] == row["requests"] and row["counts_match"] == "True"
        assert float(row["lat_p50_ms"]) <= float(row["lat_p99_ms"])
    # The table's ok column is the CSV's request count.
    assert [line.split()[2] for line in lines[2:4]] == [r["requests"] for r in rows]
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("threaded_server", [{"fail_every": 3}], indirect=True)
def test_failed_requests_make_exit_1_and_are_listed(threaded_server, capsys) -> None:
    argv = ["-m", "simple", "-u", f"127.0.0.1:{threaded_server.port}", "-n", "30", "-q"]
    assert cli.main([*argv, "--warmup", "0"]) == 1
    out, err = capsys.readouterr()
    row = out.splitlines()[2].split()
    assert (row[2], row[3]) == ("20", "10")  # 30 requests, every 3rd failed
    assert "10 request(s) failed" in err and "10 x HTTP 400: injected failure" in err
