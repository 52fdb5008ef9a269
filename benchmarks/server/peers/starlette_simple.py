"""Bare Starlette handler serving `simple` over V2 JSON: the Python floor (no batching).

benchmarks/.peers/py/bin/python benchmarks/server/peers/starlette_simple.py --port 8000
"""

from __future__ import annotations

import argparse

import uvicorn
import v2_simple as v2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON = "application/json"


async def infer(request: Request) -> Response:
    try:
        a, b = v2.decode_bytes(await request.body())
    except v2.BadRequest as exc:
        return Response(v2.orjson.dumps({"error": str(exc)}), 400, media_type=JSON)
    return Response(v2.response_bytes(*v2.compute(a, b)), media_type=JSON)


async def metadata(request: Request) -> Response:
    return Response(v2.METADATA_JSON, media_type=JSON)


async def config(request: Request) -> Response:
    return Response(v2.CONFIG_JSON, media_type=JSON)


async def ready(request: Request) -> Response:
    return Response(b"", 200)


app = Starlette(
    routes=[
        Route("/v2/models/simple/infer", infer, methods=["POST"]),
        Route("/v2/models/simple", metadata),
        Route("/v2/models/simple/config", config),
        Route("/v2/models/simple/ready", ready),
        Route("/v2/health/ready", ready),
        Route("/v2/health/live", ready),
    ]
)

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
