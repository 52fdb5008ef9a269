"""The whole load generator (HTTP client, runner, stats delta) against a real loopback server.

The toy server lives in this process (conftest.py): each test is short (tenths of a second).
"""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from accelserve.tools.bench.bench import BenchSettings, bench
from accelserve.tools.bench.httpclient import HttpConnection, HttpError, build_request

FAST = {"duration_s": 0.3, "warmup_s": 0.1, "input_sets": 4}


def _settings(port: int, **kw: object) -> BenchSettings:
    return BenchSettings(url=f"127.0.0.1:{port}", **({"model": "simple"} | FAST | kw))  # type: ignore[arg-type]


def test_concurrency_sweep_counts_match_the_server(toy_server_factory) -> None:
    async def main():
        async with toy_server_factory() as server:
            outcome = await bench(_settings(server.port, concurrency=[1, 4]))
            return server, outcome

    server, outcome = asyncio.run(main())
    assert [r.level for r in outcome.steps] == [1.0, 4.0]
    for r in outcome.steps:
        assert r.ok > 10 and r.failed == 0
        assert r.server is not None and r.server.requests == r.ok and r.counts_match
        assert r.server.queue_us == pytest.approx(10.0)  # the toy server's fixed 10 us
        assert r.latency.p50 <= r.latency.p99 <= r.latency.max
    # Warm-up, probe and measured requests all reached the server; only the window is counted.
    assert server.success > sum(r.ok for r in outcome.steps)
    # Binary bodies carry the generated INT32 data after the JSON header.
    header_len = server.bodies[0].index(b"}]}") + 3
    header = json.loads(server.bodies[0][:header_len])
    assert [i["parameters"]["binary_data_size"] for i in header["inputs"]] == [64, 64]


def test_failures_are_counted_and_reported_never_hidden(toy_server_factory) -> None:
    async def main():
        async with toy_server_factory(fail_every=5) as server:
            return await bench(_settings(server.port, concurrency=[2]))

    (r,) = asyncio.run(main()).steps
    assert r.failed > 0 and r.ok > 0
    assert r.errors == {"HTTP 400: injected failure": r.failed}
    assert r.server is not None and r.server.failed == r.failed and r.counts_match
    # Every 5th request failed: the failure share is 1/5 within the window's rounding.
    assert abs(r.failed / (r.ok + r.failed) - 0.2) < 0.05


def test_dropped_connections_fail_and_reconnect(toy_server_factory) -> None:
    async def main():
        async with toy_server_factory(drop_every=7) as server:
            return await bench(_settings(server.port, concurrency=[3], warmup_s=0.0))

    (r,) = asyncio.run(main()).steps
    assert r.failed > 0 and r.ok > 0
    assert all("connection closed by the server" in e for e in r.errors)
    # The server never counted the dropped ones: the mismatch is visible, not papered over.
    assert r.server is not None and r.server.total == r.ok and r.counts_match is False


def test_request_budget_and_json_format(toy_server_factory) -> None:
    async def main():
        async with toy_server_factory() as server:
            settings = _settings(
                server.port, concurrency=[4], requests=50, http_format="json", batch_size=8
            )
            return server, await bench(settings)

    server, outcome = asyncio.run(main())
    (r,) = outcome.steps
    assert r.ok == 50 and r.server is not None and r.server.requests == 50
    assert r.server.inferences == 400  # rows: 50 requests of batch 8
    body = json.loads(server.bodies[-1])
    assert body["inputs"][0]["shape"] == [8, 16] and len(body["inputs"][0]["data"]) == 128


def test_request_rate_is_held(toy_server_factory) -> None:
    async def main():
        async with toy_server_factory() as server:
            return await bench(_settings(server.port, request_rates=[200.0], duration_s=0.5))

    (r,) = asyncio.run(main()).steps
    assert r.mode == "rate" and r.failed == 0
    assert 85 <= r.ok <= 115  # 200/s for 0.5 s
    assert r.counts_match


def test_request_rate_beyond_the_server_is_capped_and_reported_late(
    toy_server_factory, monkeypatch
) -> None:
    from accelserve.tools.bench import runner

    monkeypatch.setattr(runner, "MAX_OPEN_LOOP_CONNECTIONS", 2)
    now = [1000.0]  # the runner's clock: it moves only when the model answers
    monkeypatch.setattr(runner, "clock", lambda: now[0])

    async def slow_model() -> None:  # each answer takes 20 ms of that clock
        now[0] += 0.02

    async def main():
        async with toy_server_factory(before_infer=slow_model) as server:
            settings = _settings(server.port, request_rates=[400.0], duration_s=0.3, warmup_s=0)
            return server, await bench(settings)

    server, outcome = asyncio.run(main())
    (r,) = outcome.steps
    assert server.connections <= 3  # the control connection plus the capped two
    assert r.failed == 0 and r.late > 0 and r.counts_match
    assert r.ok == 120  # every request scheduled in 0.3 s at 400/s was sent, late or not
    assert r.throughput < 120  # a 20 ms model carries 50/s here: far below the 400/s asked


def test_server_without_stats_still_benchmarks(toy_server_factory) -> None:
    async def main():
        async with toy_server_factory(stats_route=False, chunked_metadata=True) as server:
            return await bench(_settings(server.port, concurrency=[1]))

    outcome = asyncio.run(main())
    assert outcome.steps[0].ok > 0 and outcome.steps[0].server is None
    assert any("no statistics endpoint" in n for n in outcome.notes)


def test_a_caller_built_transport_is_the_one_driven(toy_server_factory) -> None:
    """bench(transport=...) drives that transport, not one built from the settings' URL
    (benchmarks pass a multi-connection gRPC client this way)."""
    from accelserve.tools.bench.transport import HttpTransport

    async def main():
        async with toy_server_factory() as server:
            transport = HttpTransport("127.0.0.1", server.port, "simple")
            # The settings point at a closed port: using them would fail to connect.
            settings = _settings(1, concurrency=[2])
            return server, transport, await bench(settings, transport=transport)

    server, transport, outcome = asyncio.run(main())
    (r,) = outcome.steps
    assert outcome.target == transport.description
    assert r.ok > 0 and r.failed == 0 and r.server is not None and r.server.requests == r.ok
    assert server.success > r.ok  # warm-up, probe and the window all went to this server


def test_setup_errors_are_clear(toy_server_factory) -> None:
    from accelserve.tools.bench.transport import LoadgenError

    async def main(**kw):
        async with toy_server_factory() as server:
            return await bench(_settings(server.port, concurrency=[1], **kw))

    with pytest.raises(LoadgenError, match="HTTP 404: Request for unknown model"):
        asyncio.run(main(model="nope"))
    with pytest.raises(ValueError, match="above model 'simple' max_batch_size 8"):
        asyncio.run(main(batch_size=9))


def test_http_connection_timeout_and_refused() -> None:
    async def main():
        done = asyncio.Event()

        async def silent(reader, writer):  # reads the request, never answers
            while await reader.read(1 << 16):
                pass
            writer.close()
            await writer.wait_closed()
            done.set()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = HttpConnection("127.0.0.1", port, timeout=0.1)
        with pytest.raises(HttpError, match=r"no response within 0\.1 s"):
            await conn.request(build_request("GET", "/", "x"))
        conn.close()
        await asyncio.wait_for(done.wait(), 2)  # the timeout closed our end: the server saw EOF
        server.close()
        await server.wait_closed()
        refused = HttpConnection("127.0.0.1", port, timeout=0.5)
        with pytest.raises(HttpError, match="cannot connect"):
            await refused.request(build_request("GET", "/", "x"))

    asyncio.run(main())


def test_outputs_are_right_through_the_client(toy_server_factory) -> None:
    """The client returns the exact body: decode one answer of the toy `simple`."""

    async def main():
        async with toy_server_factory() as server:
            a = np.arange(16, dtype=np.int32)
            body = json.dumps(
                {
                    "inputs": [
                        {
                            "name": "INPUT0",
                            "shape": [1, 16],
                            "datatype": "INT32",
                            "data": a.tolist(),
                        },
                        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
                    ]
                }
            ).encode()
            conn = HttpConnection("127.0.0.1", server.port, timeout=2)
            request = build_request("POST", "/v2/models/simple/infer", "h", body)
            results = [await conn.request(request) for _ in range(3)]  # keep-alive reuse
            conn.close()
            return results

    for status, body in asyncio.run(main()):
        outputs = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
        assert status == 200
        assert outputs["OUTPUT0"] == list(range(1, 17))
        assert outputs["OUTPUT1"] == list(range(-1, 15))
