"""Load/unload sent to every replica (``deploy.fanout.broadcast_control``), against real
accelserve HTTP servers standing in for the replicas' own servers, and the registry's real
``PeerRegistry`` (only Ray's actor call, ``.remote``, is done in process)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from accelserve.codecs.v2_http_json import decode_json, encode_json
from accelserve.deploy.fanout import broadcast_control
from accelserve.deploy.peers import PeerRegistry, cluster_stats
from accelserve.frontends.http import render_error
from accelserve.frontends.http_server import HttpServer, Request, Response
from tests.ray_cluster import free_port

KEY = "accelserve/accelserve-default"
PATH = "/v2/repository/models/simple/unload"


class InProcessRegistry:
    """``PeerRegistry`` called as a Ray actor handle calls it: ``registry.method.remote(...)``
    returns an awaitable (already done)."""

    def __init__(self) -> None:
        self.actor = PeerRegistry()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.actor, name)

        def remote(*args: Any) -> asyncio.Future[Any]:
            done = asyncio.get_running_loop().create_future()
            done.set_result(method(*args))
            return done

        return type("Method", (), {"remote": staticmethod(remote)})


def replica(
    name: str, status: int, seen: list[Request]
) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        seen.append(request)
        node = [(b"accelserve-ray-node", b"node-" + name.encode())]
        replica_id = [(b"accelserve-ray-replica", name.encode())]
        if status == 200:
            return 200, [(b"content-type", b"application/json"), *node, *replica_id], b"{}"
        error = render_error(status, "failed to load 'simple': out of memory")
        return error[0], list(error[1]) + node + replica_id, error[2]

    return handle


async def broadcast(statuses: list[int], gone: int = 0) -> tuple[Response, list[Request], Any]:
    registry, seen = InProcessRegistry(), []
    servers = []
    for i, status in enumerate(statuses):
        server = HttpServer(replica(f"r{i}", status, seen), render_error, 1 << 20)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        registry.actor.add(KEY, f"r{i}", f"http://127.0.0.1:{server.port}")
    for i in range(gone):  # registered, but nothing listens there any more
        registry.actor.add(KEY, f"gone{i}", f"http://127.0.0.1:{free_port()}")
    headers = [(b"authorization", b"Bearer key"), (b"host", b"cluster"), (b"content-length", b"2")]
    try:
        answer = await broadcast_control(registry, KEY, PATH, headers, b"{}")
    finally:
        for server in servers:
            await server.stop()
    return answer, seen, registry


def test_every_replica_gets_the_request_and_all_succeed() -> None:
    (status, headers, body), seen, _ = asyncio.run(broadcast([200, 200, 200]))
    assert status == 200 and body == b"{}"
    assert headers == [(b"content-type", b"application/json")]
    assert len(seen) == 3
    for request in seen:
        assert (request.method, request.path, request.body) == ("POST", PATH, b"{}")
        assert request.header(b"authorization") == b"Bearer key"  # the client's API key


def test_one_failing_replica_fails_the_request_and_is_named() -> None:
    (status, _, body), seen, _ = asyncio.run(broadcast([200, 507, 200]))
    assert len(seen) == 3  # the others were asked all the same
    assert status == 507
    error = decode_json(body)["error"]
    assert error.startswith("replica r1 at http://127.0.0.1:")
    assert "on node node-r1: failed to load 'simple': out of memory" in error


def test_a_replica_that_has_gone_is_dropped_not_waited_for() -> None:
    (status, _, _), seen, registry = asyncio.run(broadcast([200, 200], gone=1))
    assert status == 200 and len(seen) == 2
    assert len(registry.actor.urls([KEY])) == 2  # the gone one left the registry


def test_no_replica_registered_is_a_503() -> None:
    (status, _, body), _, _ = asyncio.run(broadcast([]))
    assert status == 503
    assert decode_json(body)["error"] == f"no replica of '{KEY}' is registered yet; try again"


async def stats_of(statuses: list[int], gone: int) -> tuple[Response | None, Any]:
    """``cluster_stats`` over replicas answering statistics (200) or an error (e.g. 404)."""
    registry = InProcessRegistry()
    servers = []

    def stats(status: int) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if status != 200:
                return render_error(status, "unknown model: 'nope'")
            entry = {"name": "simple", "version": "1", "inference_count": 3}
            return 200, [], encode_json({"model_stats": [entry]})

        return handle

    for i, status in enumerate(statuses):
        server = HttpServer(stats(status), render_error, 1 << 20)
        await server.start("127.0.0.1", 0)
        servers.append(server)
        registry.actor.add(KEY, f"r{i}", f"http://127.0.0.1:{server.port}")
    for i in range(gone):
        registry.actor.add(KEY, f"gone{i}", f"http://127.0.0.1:{free_port()}")
    try:
        return await cluster_stats(registry, [KEY], "/v2/models/stats"), registry
    finally:
        for server in servers:
            await server.stop()


def test_statistics_are_summed_and_a_replica_that_has_gone_is_dropped() -> None:
    answer, registry = asyncio.run(stats_of([200, 200], gone=1))
    assert answer is not None and answer[0] == 200
    assert decode_json(answer[2])["model_stats"][0]["inference_count"] == 6
    assert len(registry.actor.urls([KEY])) == 2


def test_a_replica_answering_an_error_to_statistics_stays_registered() -> None:
    # A statistics request for an unknown model is a 404 from every replica: that must not
    # take the replicas out of the registry (the front door would lose them all).
    answer, registry = asyncio.run(stats_of([404, 404], gone=0))
    assert answer is None  # the caller answers the 404 itself
    assert len(registry.actor.urls([KEY])) == 2
