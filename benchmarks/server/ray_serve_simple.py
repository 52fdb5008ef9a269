"""Ray Serve's own way to serve Triton's ``simple`` (the baseline of bench_ray.py).

A Serve deployment over the same ONNX file with onnxruntime, batching with ``@serve.batch``
(as Ray's documentation recommends), answering the same KServe V2 requests (binary tensor
extension, as ``accelserve.tools.bench`` sends them) so the same load generator drives it.
The cluster is started with Ray's fastest front door (HAProxy, direct ingress,
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: tests/ray_cluster.py's ``haproxy=True``).

    python -m benchmarks.server.ray_serve_simple --address HOST:PORT --port 8000 \\
        --model-dir DIR --metadata FILE --config FILE [--replicas 2] [--replica-cpus 1]

``--metadata`` and ``--config`` are the JSON answers of a V2 server for ``simple`` (what it
replays for ``GET /v2/models/simple[/config]``). Every answer names the Ray node of the replica
that gave it (header ``rayserve-node``, as accelserve's replicas send ``accelserve-ray-node``).
Serves until SIGTERM, then deletes the app.
"""

from __future__ import annotations

import argparse
import json
import signal
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

APP = "rayserve"
DTYPES = {"INT32": np.int32, "FP32": np.float32, "INT64": np.int64}
NODE_HEADER = "rayserve-node"


def build(
    model_path: str,
    metadata: dict[str, Any],
    config: dict[str, Any],
    replicas: int,
    replica_cpus: float = 1,
) -> Any:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    max_batch = int(config.get("max_batch_size", 8)) or 1

    @serve.deployment(
        num_replicas=replicas,
        max_ongoing_requests=128,
        ray_actor_options={"num_cpus": replica_cpus},
    )
    class SimpleOnnx:
        def __init__(self) -> None:
            import onnxruntime as ort
            import ray

            self.node = {NODE_HEADER: ray.get_runtime_context().get_node_id()}

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = ort.InferenceSession(
                model_path, options, providers=["CPUExecutionProvider"]
            )
            self.outputs = [o["name"] for o in metadata["outputs"]]
            self.types = [o["datatype"] for o in metadata["outputs"]]

        @serve.batch(max_batch_size=max_batch, batch_wait_timeout_s=0.0)
        async def run(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
            names = list(feeds[0])
            joined = {n: np.concatenate([f[n] for f in feeds]) for n in names}
            results = self.session.run(self.outputs, joined)
            answers, start = [], 0
            for feed in feeds:
                rows = len(feed[names[0]])
                answers.append([r[start : start + rows] for r in results])
                start += rows
            return answers

        async def __call__(self, request: Request) -> Response:
            path = request.url.path.rstrip("/")
            if request.method == "GET":
                if path.endswith("/config"):
                    return JSONResponse(config)
                if path.endswith("/ready") or path.endswith("/health/ready"):
                    return Response(status_code=200)
                return JSONResponse(metadata, headers=self.node)
            body = await request.body()
            header_len = int(request.headers.get("inference-header-content-length", len(body)))
            feed = decode_binary_request(body, header_len)
            results = await self.run(feed)
            named = zip(self.outputs, self.types, results, strict=True)
            head, raws = encode_binary_response(metadata["name"], named)
            return Response(
                content=head + b"".join(raws),
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(len(head)), **self.node},
            )

    return SimpleOnnx.bind()


# -- shared with ray_serve_minilm.py ---------------------------------------------------------


def decode_binary_request(body: bytes, header_len: int) -> dict[str, Any]:
    """The input tensors of a V2 request whose tensors all travel in binary (Triton's binary
    tensor extension): name -> array; BYTES tensors become object arrays of ``bytes``."""
    header = json.loads(body[:header_len])
    feed: dict[str, Any] = {}
    offset = header_len
    for tensor in header["inputs"]:
        size = tensor["parameters"]["binary_data_size"]
        raw = body[offset : offset + size]
        offset += size
        if tensor["datatype"] == "BYTES":  # each element: 4-byte little-endian length, bytes
            items, at = [], 0
            while at < len(raw):
                (length,) = struct.unpack_from("<I", raw, at)
                items.append(raw[at + 4 : at + 4 + length])
                at += 4 + length
            value = np.array(items, dtype=object)
        else:
            value = np.frombuffer(raw, DTYPES[tensor["datatype"]])
        feed[tensor["name"]] = value.reshape(tensor["shape"])
    return feed


def encode_binary_response(
    model_name: str, outputs: Iterable[tuple[str, str, np.ndarray]]
) -> tuple[bytes, list[bytes]]:
    """A V2 response's JSON header and binary tensors for (name, datatype, value) outputs."""
    described, raws = [], []
    for name, kind, value in outputs:
        raw = np.ascontiguousarray(value).tobytes()
        raws.append(raw)
        described.append(
            {
                "name": name,
                "datatype": kind,
                "shape": list(value.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
        )
    head = json.dumps({"model_name": model_name, "outputs": described}).encode()
    return head, raws


def serve_until_stopped(address: str, port: int, make_app: Callable[[], Any]) -> None:
    """Connect to the cluster at ``address``, run ``make_app()`` as the app on ``port`` and
    serve until SIGTERM or SIGINT, then delete the app."""
    import ray
    from ray import serve

    ray.init(address=address, logging_level="error")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(make_app(), name=APP, route_prefix="/", blocking=False)
        print("ray serve app running", flush=True)
        while not stop.wait(1.0):
            pass
    finally:
        try:
            serve.delete(APP)
        finally:
            ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", required=True, help="the model's directory (1/model.onnx)")
    parser.add_argument("--metadata", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument(
        "--replica-cpus", type=float, default=1, help="CPUs each replica asks Ray for"
    )
    args = parser.parse_args()

    with open(args.metadata) as f:
        metadata = json.load(f)
    with open(args.config) as f:
        config = json.load(f)
    model_path = f"{args.model_dir}/1/model.onnx"
    serve_until_stopped(
        args.address,
        args.port,
        lambda: build(model_path, metadata, config, args.replicas, args.replica_cpus),
    )


if __name__ == "__main__":
    main()
