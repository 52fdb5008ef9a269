"""The registry's change notification (``PeerRegistry.endpoints_after``): the front door
learns of a replica when it registers or leaves, not at its next poll."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from accelserve.deploy.peers import PeerRegistry

KEY = "accelserve/accelserve-default"
URL = "http://127.0.0.1:9001"


def test_a_reader_behind_the_version_gets_the_endpoints_at_once() -> None:
    registry = PeerRegistry()
    registry.add(KEY, "r1", URL, "127.0.0.1:9002")
    # A day's timeout: the answer cannot come from waiting it out.
    version, endpoints = asyncio.run(registry.endpoints_after([KEY], -1, 86400))
    assert version == registry.version == 1
    assert endpoints == {KEY: [{"http": URL, "grpc": "127.0.0.1:9002"}]}


def test_a_waiting_reader_is_woken_by_a_registration() -> None:
    registry = PeerRegistry()

    async def scenario() -> tuple[int, dict[str, list[dict[str, str]]]]:
        reader = asyncio.create_task(registry.endpoints_after([KEY], registry.version, 86400))
        await asyncio.sleep(0)  # the reader is waiting now
        assert not reader.done()
        registry.add(KEY, "r1", URL)
        return await reader

    version, endpoints = asyncio.run(scenario())
    assert (version, endpoints) == (1, {KEY: [{"http": URL}]})


def test_removals_wake_readers_and_a_removal_of_nothing_does_not() -> None:
    registry = PeerRegistry()
    registry.add(KEY, "r1", URL)

    async def woken_by(remove: Callable[[], None]) -> int:
        reader = asyncio.create_task(registry.endpoints_after([KEY], registry.version, 86400))
        await asyncio.sleep(0)
        assert not reader.done()
        remove()
        return (await reader)[0]

    registry.remove(KEY, "gone")  # nothing to remove: no change
    registry.remove_url("http://127.0.0.1:1")
    assert registry.version == 1
    assert asyncio.run(woken_by(lambda: registry.remove_url(URL))) == 2
    registry.add(KEY, "r2", URL)
    assert asyncio.run(woken_by(lambda: registry.remove(KEY, "r2"))) == 4
    assert registry.endpoints([KEY]) == {KEY: []}


def test_with_no_change_the_reader_gets_the_same_version_after_its_timeout() -> None:
    registry = PeerRegistry()
    registry.add(KEY, "r1", URL)
    version, endpoints = asyncio.run(registry.endpoints_after([KEY], 1, 0))
    assert (version, endpoints) == (1, {KEY: [{"http": URL}]})
    assert registry._waiting == []  # a reader that timed out leaves nothing behind
