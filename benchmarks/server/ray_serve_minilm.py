"""Ray Serve's own way to serve MiniLM sentence embeddings (the baseline of bench_ray.py's
``minilm`` step), on the files accelserve serves.

A Serve deployment doing the work of accelserve's ``minilm`` pipeline in one replica: tokenize
the request's text with the same ``tokenizers`` file (``minilm_tokenizer/1/tokenizer.json``:
every batch padded to its longest sentence, truncated at 256 tokens), run the same ONNX
transformer (``minilm_transformer/1/model.onnx``) with onnxruntime on one intra-op thread, then
mean-pool over the attention mask and L2-normalize in NumPy (benchmarks/server/peers/
minilm_peer.py's ``Embedder``). Requests are batched with ``@serve.batch``; the sentences of a
batch are tokenized together, so sentences of different lengths are padded to one length
before they run as one array. It answers the same KServe V2 binary requests as accelserve
(BYTES ``text`` [n, 1] in; FP32 ``embedding`` [n, 384] and INT64 ``token_count`` [n, 1] out:
the tokens after truncation, which accelserve counts before it, the same below 256 tokens), so
the same load generator drives both. Pre-tokenized requests are refused (400).

    python -m benchmarks.server.ray_serve_minilm --address HOST:PORT --port 8000 \\
        --repository DIR --metadata FILE --config FILE [--replicas 4] [--replica-cpus 2]

``--repository`` is a repository written by ``accelserve export sentence-transformer``;
``--metadata`` and ``--config`` are a V2 server's JSON answers for ``minilm`` (replayed for
``GET /v2/models/minilm[/config]``). The replicas import this package, so the cluster's nodes
need the repository root on their ``PYTHONPATH``. Serves until SIGTERM, then deletes the app.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from benchmarks.server.ray_serve_simple import (
    decode_binary_request,
    encode_binary_response,
    serve_until_stopped,
)


def build(
    repository: str,
    metadata: dict[str, Any],
    config: dict[str, Any],
    replicas: int,
    replica_cpus: float,
) -> Any:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    max_batch = int(config.get("max_batch_size", 64)) or 1

    @serve.deployment(
        num_replicas=replicas,
        max_ongoing_requests=128,
        ray_actor_options={"num_cpus": replica_cpus},
    )
    class MiniLMOnnx:
        def __init__(self) -> None:
            from benchmarks.server.peers.minilm_peer import Embedder

            self.embedder = Embedder(repository, threads=1)

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=0.0)
        async def run(self, requests: list[list[str]]) -> list[tuple[np.ndarray, np.ndarray]]:
            texts = [text for request in requests for text in request]
            vectors, counts = self.embedder.embed_counted(texts)
            answers, start = [], 0
            for request in requests:
                stop = start + len(request)
                answers.append((vectors[start:stop], counts[start:stop]))
                start = stop
            return answers

        async def __call__(self, request: Request) -> Response:
            path = request.url.path.rstrip("/")
            if request.method == "GET":
                if path.endswith("/config"):
                    return JSONResponse(config)
                if path.endswith("/ready"):
                    return Response(status_code=200)
                return JSONResponse(metadata)
            body = await request.body()
            header_len = int(request.headers.get("inference-header-content-length", len(body)))
            feed = decode_binary_request(body, header_len)
            if set(feed) != {"text"}:
                message = f"inputs: expected only 'text' (BYTES [n, 1]); received {sorted(feed)}"
                return JSONResponse({"error": message}, status_code=400)
            texts = [item.decode() for item in feed["text"].reshape(-1)]
            vectors, counts = await self.run(texts)
            named = [("embedding", "FP32", vectors), ("token_count", "INT64", counts)]
            head, raws = encode_binary_response(metadata["name"], named)
            return Response(
                content=head + b"".join(raws),
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(len(head))},
            )

    return MiniLMOnnx.bind()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--repository", required=True, help="the exported MiniLM repository")
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--replica-cpus", type=float, default=2, help="CPUs each replica asks")
    args = parser.parse_args()
    with open(args.metadata) as f:
        metadata = json.load(f)
    with open(args.config) as f:
        config = json.load(f)
    serve_until_stopped(
        args.address,
        args.port,
        lambda: build(args.repository, metadata, config, args.replicas, args.replica_cpus),
    )


if __name__ == "__main__":
    main()
