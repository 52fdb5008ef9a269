"""Ray Serve serving all-MiniLM-L6-v2 over V2 JSON, batched with `@serve.batch`.

    MINILM_DIR=... benchmarks/.peers/py/bin/python benchmarks/server/peers/ray_serve_minilm.py --port 8000

`MINILM_INSTANCES` replicas (default 1); `max_ongoing_requests` raised so that 32 clients can
form batches of up to 64.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import threading

import minilm_peer as peer
import numpy as np
import orjson
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

JSON = "application/json"


@serve.deployment(
    num_replicas=1,
    max_ongoing_requests=256,
    ray_actor_options={"num_cpus": 0},
    graceful_shutdown_timeout_s=2,
    graceful_shutdown_wait_loop_s=0.5,
)
class MiniLM:
    def __init__(self) -> None:
        self.embedder = peer.Embedder()

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if request.method == "POST" and path == "/v2/models/minilm/infer":
            try:
                texts = peer.decode(orjson.loads(await request.body()))
            except (peer.BadRequest, orjson.JSONDecodeError) as exc:
                return Response(orjson.dumps({"error": str(exc)}), 400, media_type=JSON)
            # One request may carry several sentences; each goes through the batcher alone.
            rows = await asyncio.gather(*(self.one(t) for t in texts))
            body = orjson.dumps(peer.response(np.stack(rows)), option=orjson.OPT_SERIALIZE_NUMPY)
            return Response(body, media_type=JSON)
        if path == "/v2/models/minilm":
            return Response(peer.METADATA_JSON, media_type=JSON)
        if path == "/v2/models/minilm/config":
            return Response(peer.CONFIG_JSON, media_type=JSON)
        if path in ("/v2/health/ready", "/v2/health/live", "/v2/models/minilm/ready"):
            return Response(b"", 200)
        return Response(b'{"error": "not found"}', 404, media_type=JSON)

    @serve.batch(max_batch_size=peer.MAX_BATCH, batch_wait_timeout_s=0.0)
    async def one(self, texts: list[str]) -> list[np.ndarray]:
        return list(self.embedder.embed(texts))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    replicas = int(os.environ.get("MINILM_INSTANCES", "1"))
    serve.run(MiniLM.options(num_replicas=replicas).bind(), name="minilm", route_prefix="/")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
