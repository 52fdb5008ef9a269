"""Every replica of a group, reachable: for answers that must cover all of them (statistics).

Ray Serve sends a request to one replica and has no broadcast, so each replica also serves
its data plane on accelserve's own HTTP server (on its node's address, a free port) and
records that address in a registry: a small detached Ray actor on the head node, keyed by
application and deployment. The replica (or router) that receives a statistics request reads
the addresses, asks every replica, and sums the answers (``sum_model_stats``, a pure function). A replica that has gone (killed, node lost) is
dropped from the registry the first time it does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import quote

from accelserve.codecs.v2_http_json import decode_json, encode_json
from accelserve.frontends.http_server import Response

REGISTRY = "accelserve-peers"
NAMESPACE = "accelserve"
HEAD_NODE = {"node:__internal_head__": 0.001}
FETCH_TIMEOUT_S = 2.0


class PeerRegistry:
    """The Ray actor behind ``registry()``: group key -> replica id -> base URL.

    ``version`` counts the changes, and ``endpoints_after`` answers as soon as there is one:
    the front door learns of a new replica when it registers instead of at its next poll."""

    def __init__(self) -> None:
        self.peers: dict[str, dict[str, str]] = {}
        self.grpc: dict[str, str] = {}  # base URL -> host:port of that replica's gRPC server
        self.version = 0
        self._waiting: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def add(self, group: str, replica: str, url: str, grpc: str | None = None) -> None:
        self.peers.setdefault(group, {})[replica] = url
        if grpc is not None:
            self.grpc[url] = grpc
        self._changed()

    def remove(self, group: str, replica: str) -> None:
        if self.peers.get(group, {}).pop(replica, None) is not None:
            self._changed()

    def remove_url(self, url: str) -> None:
        for replicas in self.peers.values():
            for replica in [r for r, u in replicas.items() if u == url]:
                del replicas[replica]
                self._changed()

    def _changed(self) -> None:
        self.version += 1
        waiting, self._waiting = self._waiting, []
        for loop, event in waiting:  # thread-safe: Ray may call a sync method off the loop
            loop.call_soon_threadsafe(event.set)

    async def endpoints_after(
        self, groups: list[str], version: int, timeout: float
    ) -> tuple[int, dict[str, list[dict[str, str]]]]:
        """``(version, endpoints(groups))`` once the registry's version differs from
        ``version``, or after ``timeout`` seconds."""
        if self.version == version:
            waiter = (asyncio.get_running_loop(), asyncio.Event())
            self._waiting.append(waiter)
            try:
                await asyncio.wait_for(waiter[1].wait(), timeout)
            except TimeoutError:  # no change: forget the waiter (the door asks twice a second)
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
        return self.version, self.endpoints(groups)

    def urls(self, groups: list[str]) -> list[str]:
        return [url for g in groups for url in self.peers.get(g, {}).values()]

    def endpoints(self, groups: list[str]) -> dict[str, list[dict[str, str]]]:
        """Group key -> its replicas' ``{"http": base URL, "grpc": host:port}`` (the front
        door's view, ``deploy.frontdoor``; "grpc" absent where a replica serves none)."""
        return {
            g: [
                {"http": url, **({"grpc": self.grpc[url]} if url in self.grpc else {})}
                for url in self.peers.get(g, {}).values()
            ]
            for g in groups
        }


def registry() -> Any:
    """The cluster's registry actor (created by the first caller)."""
    import ray

    actor = ray.remote(num_cpus=0, resources=HEAD_NODE)(PeerRegistry)
    return actor.options(
        name=REGISTRY, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


def remove_registry() -> None:
    import ray

    with contextlib.suppress(ValueError):  # ValueError: none was created
        ray.kill(ray.get_actor(REGISTRY, namespace=NAMESPACE))


async def cluster_stats(registry: Any, keys: list[str], path: str) -> Response | None:
    """``GET path`` (a statistics route) from every replica registered under ``keys``,
    summed; None when no replica answers 200 (the caller then answers alone, with its error).
    A replica whose server has gone is dropped from the registry; one that answers an error
    (an unknown model: 404) stays."""
    from accelserve.deploy.fanout import ask_every_replica

    found = []
    for _, answer in await ask_every_replica(registry, keys, "GET", quote(path), FETCH_TIMEOUT_S):
        if isinstance(answer, BaseException) or answer[0] != 200:
            continue
        stats = decode_json(answer[2])
        if isinstance(stats, dict) and isinstance(stats.get("model_stats"), list):
            found.append(stats["model_stats"])
    if not found:
        return None
    body = encode_json({"model_stats": sum_model_stats(found)})
    return 200, [(b"content-type", b"application/json")], body


def sum_model_stats(answers: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Triton's ``model_stats`` of several replicas as one: counts and durations added per
    (model, version), batch statistics per batch size, ``last_inference`` the latest,
    ``memory_usage`` (one entry per instance) joined."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for stats in answers:
        for entry in stats:
            key = (entry["name"], entry["version"])
            merged[key] = _add(merged[key], entry) if key in merged else entry
    return [merged[key] for key in sorted(merged)]


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in a.items():
        other = b.get(key)
        if key == "last_inference":
            result[key] = max(value, other or 0)
        elif key == "batch_stats":
            by_size = {s["batch_size"]: s for s in value}
            for s in other or []:
                size = s["batch_size"]
                by_size[size] = _add(by_size[size], s) if size in by_size else s
            result[key] = [by_size[size] for size in sorted(by_size)]
        elif isinstance(value, dict):
            result[key] = _add(value, other or {})
        elif isinstance(value, list):
            result[key] = value + list(other or [])
        elif isinstance(value, int | float) and not isinstance(value, bool) and key != "batch_size":
            result[key] = value + (other or 0)
        else:  # name, version, batch_size
            result[key] = value
    return result
