"""Requests the router sends to every replica of a group, on the replicas' own HTTP servers
(their addresses are in the registry, ``deploy.peers``): the cluster's ``/metrics`` and
repository control (load/unload), which Ray Serve, routing each request to one replica,
cannot broadcast.
"""

from __future__ import annotations

import asyncio
from typing import Any

from accelserve.codecs.v2_http_json import decode_json
from accelserve.deploy.exposition import merge_expositions
from accelserve.frontends.http import render_error
from accelserve.frontends.http_server import Headers, Response

METRICS_TIMEOUT_S = 5.0
CONTROL_TIMEOUT_S = 300.0  # a load may build an engine or read a large model
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
NODE_HEADER = "accelserve-ray-node"  # replica.NODE_HEADER, as a parsed header name
REPLICA_HEADER = "accelserve-ray-replica"
_HOP_BY_HOP = {b"host", b"content-length", b"connection", b"transfer-encoding", b"keep-alive"}


class PeerGone(Exception):
    """The replica's server refused or dropped the connection: the replica has gone."""


async def fetch(
    url: str,
    method: str,
    path: str,
    timeout: float,
    headers: Headers = (),  # type: ignore[assignment]  # any sequence of header pairs
    body: bytes = b"",
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request to a replica's server (``url`` = ``http://host:port``): status,
    headers (lower-case names) and body. Raises ``PeerGone``, or ``TimeoutError`` when it
    does not answer within ``timeout``."""
    host, _, port = url.removeprefix("http://").partition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    except OSError as exc:
        raise PeerGone(str(exc)) from None
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close"]
        head += [f"Content-Length: {len(body)}"] if body or method == "POST" else []
        lines = "\r\n".join(head).encode() + b"\r\n"
        for name, value in headers:
            if name.lower() not in _HOP_BY_HOP:
                lines += name + b": " + value + b"\r\n"
        writer.write(lines + b"\r\n" + body)
        data = await asyncio.wait_for(reader.read(-1), timeout)
    except (ConnectionError, EOFError) as exc:
        raise PeerGone(str(exc)) from None
    finally:
        writer.close()
    return parse_response(data)


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise PeerGone(f"not an HTTP answer: {status_line[:80]!r}")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return int(parts[1]), found, body


async def ask_every_replica(
    registry: Any,
    keys: list[str],
    method: str,
    path: str,
    timeout: float,
    headers: Headers = (),  # type: ignore[assignment]  # any sequence of header pairs
    body: bytes = b"",
) -> list[tuple[str, tuple[int, dict[str, str], bytes] | BaseException]]:
    """The same request to every replica registered under ``keys``, at once: each URL with
    its answer or the exception it raised. A replica whose server has gone (``PeerGone``) is
    dropped from the registry; one that answers an error or too late stays."""
    urls: list[str] = await registry.urls.remote(keys)
    answers = await asyncio.gather(
        *(fetch(url, method, path, timeout, headers, body) for url in urls),
        return_exceptions=True,
    )
    for url, answer in zip(urls, answers, strict=True):
        if isinstance(answer, PeerGone):
            registry.remove_url.remote(url)
    return list(zip(urls, answers, strict=True))


async def cluster_metrics(registry: Any, keys: list[str]) -> Response:
    """Every replica's Prometheus text (the replicas registered under ``keys``), each sample
    labelled with the replica's ``node`` and ``replica``: one exposition."""
    parts = []
    for url, answer in await ask_every_replica(
        registry, keys, "GET", "/metrics", METRICS_TIMEOUT_S
    ):
        if isinstance(answer, BaseException) or answer[0] != 200:
            continue  # a replica that cannot answer now: its series pause, as a down target's
        _, headers, body = answer
        labels = {
            "node": headers.get(NODE_HEADER, ""),
            "replica": headers.get(REPLICA_HEADER, url),
        }
        parts.append((labels, body.decode("utf-8", "replace")))
    if not parts:
        return render_error(503, "no replica answered /metrics (is prometheus-client installed?)")
    return 200, [(b"content-type", METRICS_CONTENT_TYPE)], merge_expositions(parts).encode()


async def broadcast_control(
    registry: Any, key: str, path: str, headers: Headers, body: bytes
) -> Response:
    """``POST path`` (a model's load or unload) on every replica registered under ``key``:
    the first replica's answer when all succeed, else the first failure, naming the replica.
    A replica that has gone (connection refused or dropped) is dropped from the registry and
    not waited for: the one Serve starts instead loads the whole group."""
    answers = await ask_every_replica(
        registry, [key], "POST", path, CONTROL_TIMEOUT_S, headers, body
    )
    if not answers:
        return render_error(503, f"no replica of '{key}' is registered yet; try again")
    answered = []
    for url, answer in answers:
        if isinstance(answer, PeerGone):
            continue
        if isinstance(answer, TimeoutError):
            return render_error(
                504, f"replica at {url} did not answer within {CONTROL_TIMEOUT_S:.0f} s"
            )
        if isinstance(answer, BaseException):
            raise answer
        status, found, payload = answer
        if status >= 300:
            where = f"replica {found.get(REPLICA_HEADER, '?')} at {url}"
            where += f" on node {found[NODE_HEADER]}" if NODE_HEADER in found else ""
            return render_error(status, f"{where}: {_error_text(payload)}")
        answered.append(answer)
    if not answered:
        return render_error(503, f"no replica of '{key}' answered (all gone); try again")
    status, found, payload = answered[0]
    kept = [(b"content-type", found.get("content-type", "application/json").encode())]
    return status, kept, payload


def _error_text(payload: bytes) -> str:
    try:
        data = decode_json(payload)
    except Exception:  # not JSON: the text itself
        return payload.decode("utf-8", "replace").strip()
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return data["error"]
    return payload.decode("utf-8", "replace").strip()
