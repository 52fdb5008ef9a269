"""LitServe serving all-MiniLM-L6-v2 over V2 JSON with batching (max_batch_size 64).

    MINILM_DIR=... benchmarks/.peers/py/bin/python benchmarks/server/peers/litserve_minilm.py --port 8000

Configured as LitServe documents for throughput: `MINILM_INSTANCES` CPU workers (default 1),
`fast_queue=True` (ZeroMQ).
Each request carries one sentence (the benchmark's workload); `decode_request` takes the first.
"""

import argparse
import os

import litserve as ls
import minilm_peer as peer
import numpy as np
from starlette.responses import Response

JSON = "application/json"


class MiniLMAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.embedder = peer.Embedder()

    # No annotations here: LitServe builds its route from them (none: parse the JSON body).
    def decode_request(self, request):
        return peer.decode(request)[0]

    def batch(self, inputs):
        return inputs

    def predict(self, texts):
        return self.embedder.embed(list(texts))

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return peer.response(np.asarray(output).reshape(1, -1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    api = MiniLMAPI(
        max_batch_size=peer.MAX_BATCH, batch_timeout=0.0, api_path="/v2/models/minilm/infer"
    )
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=int(os.environ.get("MINILM_INSTANCES", "1")),
        fast_queue=True,
    )

    def const(body: bytes):  # extra V2 routes so the load generator can read metadata/config
        async def handler() -> Response:
            return Response(body, media_type=JSON)

        return handler

    server.app.add_api_route("/v2/models/minilm", const(peer.METADATA_JSON), methods=["GET"])
    server.app.add_api_route("/v2/models/minilm/config", const(peer.CONFIG_JSON), methods=["GET"])
    server.app.add_api_route("/v2/health/ready", const(b""), methods=["GET"])
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
