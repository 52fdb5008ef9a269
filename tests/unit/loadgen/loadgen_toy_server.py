"""A tiny in-process KServe V2 server (asyncio streams, loopback) for the load generator tests.

It is a real HTTP/1.1 server on 127.0.0.1 with keep-alive, the binary tensor extension and
Triton-shaped /stats, serving a toy `simple` (INPUT0, INPUT1 INT32 [16] -> sum, difference).
Faults can be injected: every Nth infer answered 400 (counted as a failure in /stats, as Triton
does), or every Mth connection dropped without an answer (the server never counts it). A slow
model is a test's own coroutine, awaited before each infer is answered (``before_infer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

SIMPLE_METADATA = {
    "name": "simple",
    "versions": ["1"],
    "platform": "toy",
    "inputs": [{"name": n, "datatype": "INT32", "shape": [-1, 16]} for n in ("INPUT0", "INPUT1")],
    "outputs": [
        {"name": n, "datatype": "INT32", "shape": [-1, 16]} for n in ("OUTPUT0", "OUTPUT1")
    ],
}
SIMPLE_CONFIG = {
    "name": "simple",
    "max_batch_size": 8,
    "input": [{"name": n, "data_type": "TYPE_INT32", "dims": [16]} for n in ("INPUT0", "INPUT1")],
    "output": [
        {"name": n, "data_type": "TYPE_INT32", "dims": [16]} for n in ("OUTPUT0", "OUTPUT1")
    ],
}


@dataclass
class ToyServer:
    fail_every: int = 0
    drop_every: int = 0
    chunked_metadata: bool = False
    stats_route: bool = True
    before_infer: Callable[[], Awaitable[None]] | None = None  # per infer: a slow model
    connections: int = 0
    port: int = 0
    infers: int = 0
    success: int = 0
    failures: int = 0
    rows: int = 0
    bodies: list[bytes] = field(default_factory=list)
    _server: asyncio.AbstractServer | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        # Let every handler see its closed stream and finish before the loop goes away.
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def stats(self) -> dict[str, object]:
        zero = {"count": 0, "ns": 0}
        return {
            "model_stats": [
                {
                    "name": "simple",
                    "version": "1",
                    "inference_count": self.rows,
                    "execution_count": self.success,
                    "inference_stats": {
                        "success": {"count": self.success, "ns": self.success * 50_000},
                        "fail": {"count": self.failures, "ns": self.failures * 1_000},
                        "queue": {"count": self.success, "ns": self.success * 10_000},
                        "compute_input": {"count": self.success, "ns": self.success * 5_000},
                        "compute_infer": {"count": self.success, "ns": self.success * 20_000},
                        "compute_output": {"count": self.success, "ns": self.success * 5_000},
                        "cache_hit": zero,
                        "cache_miss": zero,
                    },
                }
            ]
        }

    def _infer(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes, dict[str, str]]:
        self.infers += 1
        if self.fail_every and self.infers % self.fail_every == 0:
            self.failures += 1
            return 400, json.dumps({"error": "injected failure"}).encode(), {}
        if len(self.bodies) < 64:
            self.bodies.append(body)
        header_len = int(headers.get("inference-header-content-length", len(body)))
        request = json.loads(body[:header_len])
        arrays, offset = {}, header_len
        for item in request["inputs"]:
            size = item.get("parameters", {}).get("binary_data_size")
            if size is None:
                data = np.asarray(item["data"], dtype=np.int32)
            else:
                data = np.frombuffer(body[offset : offset + size], dtype="<i4")
                offset += size
            arrays[item["name"]] = data.reshape(item["shape"])
        a, b = arrays["INPUT0"], arrays["INPUT1"]
        self.success += 1
        self.rows += a.shape[0]
        outputs = [
            {
                "name": "OUTPUT0",
                "datatype": "INT32",
                "shape": list(a.shape),
                "data": (a + b).ravel().tolist(),
            },
            {
                "name": "OUTPUT1",
                "datatype": "INT32",
                "shape": list(a.shape),
                "data": (a - b).ravel().tolist(),
            },
        ]
        return 200, json.dumps({"model_name": "simple", "outputs": outputs}).encode(), {}

    def _route(self, method: str, path: str, headers: dict[str, str], body: bytes):
        if method == "POST" and path == "/v2/models/simple/infer":
            return self._infer(headers, body)
        if path == "/v2/models/simple":
            return 200, json.dumps(SIMPLE_METADATA).encode(), {}
        if path == "/v2/models/simple/config":
            return 200, json.dumps(SIMPLE_CONFIG).encode(), {}
        if path == "/v2/models/simple/stats" and self.stats_route:
            return 200, json.dumps(self.stats()).encode(), {}
        message = {"error": f"Request for unknown model or route: {path}"}
        return 404, json.dumps(message).encode(), {}

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    k, v = h.decode().split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", 0)))
                dropped = self.drop_every and (self.infers + 1) % self.drop_every == 0
                if method == "POST" and dropped:
                    self.infers += 1
                    writer.close()
                    return
                if self.before_infer is not None and path.endswith("/infer"):
                    await self.before_infer()
                status, payload, _ = self._route(method, path, headers, body)
                chunked = self.chunked_metadata and path == "/v2/models/simple"
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                if chunked:  # exercise the client's chunked decoding
                    half = len(payload) // 2
                    chunks = b"".join(
                        f"{len(c):x}\r\n".encode() + c + b"\r\n"
                        for c in (payload[:half], payload[half:])
                    )
                    writer.write((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
                    writer.write(chunks + b"0\r\n\r\n")
                else:
                    writer.write((head + f"Content-Length: {len(payload)}\r\n\r\n").encode())
                    writer.write(payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
