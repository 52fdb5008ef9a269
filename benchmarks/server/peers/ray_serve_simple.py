"""Ray Serve serving `simple` over V2 JSON, batched with `@serve.batch`.

    benchmarks/.peers/py/bin/python benchmarks/server/peers/ray_serve_simple.py --port 8000

One replica (the others also run one model instance); `max_ongoing_requests` is raised from
Ray's default of 5 so that 64 connections can form full batches of 8.
"""

from __future__ import annotations

import argparse
import signal
import threading

import numpy as np
import ray
import v2_simple as v2
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
class Simple:
    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if request.method == "POST" and path == "/v2/models/simple/infer":
            try:
                a, b = v2.decode_bytes(await request.body())
            except v2.BadRequest as exc:
                return Response(v2.orjson.dumps({"error": str(exc)}), 400, media_type=JSON)
            out0, out1 = await self.run((a, b))
            return Response(v2.response_bytes(out0, out1), media_type=JSON)
        if path == "/v2/models/simple":
            return Response(v2.METADATA_JSON, media_type=JSON)
        if path == "/v2/models/simple/config":
            return Response(v2.CONFIG_JSON, media_type=JSON)
        if path in ("/v2/health/ready", "/v2/health/live", "/v2/models/simple/ready"):
            return Response(b"", 200)
        return Response(b'{"error": "not found"}', 404, media_type=JSON)

    @serve.batch(max_batch_size=v2.MAX_BATCH, batch_wait_timeout_s=0.0)
    async def run(
        self, items: list[tuple[np.ndarray, np.ndarray]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        return v2.run_batch(items)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    serve.run(Simple.bind(), name="simple", route_prefix="/")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
