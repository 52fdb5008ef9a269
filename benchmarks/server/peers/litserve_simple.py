"""LitServe serving `simple` over V2 JSON with batching (max_batch_size 8).

    benchmarks/.peers/py/bin/python benchmarks/server/peers/litserve_simple.py --port 8000

Configured as LitServe documents for throughput: one CPU worker, `fast_queue=True` (ZeroMQ).
LitServe decodes the JSON body itself (FastAPI); `decode_request` receives the parsed dict.
"""

import argparse

import litserve as ls
import numpy as np
import v2_simple as v2
from starlette.responses import Response

JSON = "application/json"
Pair = tuple[np.ndarray, np.ndarray]


class SimpleAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    # No annotations here: LitServe builds its route from them (none: parse the JSON body).
    def decode_request(self, request):
        return v2.decode(request)

    def batch(self, inputs: list[Pair]) -> list[Pair]:
        return inputs

    def predict(self, x: list[Pair]) -> list[Pair]:
        return v2.run_batch(x)

    def unbatch(self, output: list[Pair]) -> list[Pair]:
        return output

    def encode_response(self, output):
        return v2.response(*output)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    api = SimpleAPI(
        max_batch_size=v2.MAX_BATCH, batch_timeout=0.0, api_path="/v2/models/simple/infer"
    )
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, fast_queue=True)

    def const(body: bytes):  # extra V2 routes so the load generator can read metadata/config
        async def handler() -> Response:
            return Response(body, media_type=JSON)

        return handler

    server.app.add_api_route("/v2/models/simple", const(v2.METADATA_JSON), methods=["GET"])
    server.app.add_api_route("/v2/models/simple/config", const(v2.CONFIG_JSON), methods=["GET"])
    server.app.add_api_route("/v2/health/ready", const(b""), methods=["GET"])
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
