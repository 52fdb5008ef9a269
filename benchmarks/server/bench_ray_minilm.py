"""bench_ray.py's MiniLM step: sentence embeddings (all-MiniLM-L6-v2) at 32 connections.

The repository is the ``minilm`` example as ``accelserve prepare-examples`` builds it (the
export cache makes this offline and quick after the first build): the ensemble
``minilm_tokenizer -> minilm_transformer -> minilm_head``. One accelserve replica of it asks Ray
for what its instances need (tokenizer 1 + transformer 2 instances of 1 ONNX Runtime thread +
head 1 = 4 CPUs), so each node of the MiniLM clusters has that many logical CPUs and holds one
replica. Ray Serve's peer (benchmarks/server/ray_serve_minilm.py) gets the same logical CPUs per
node as two replicas of half of them, each running the transformer on one intra-op thread: as
many transformer runs in flight per node as accelserve's two instances.

Each client sends one sentence of 6 to 40 words per request (text, V2 binary tensors), drawn
from the sentences of bench_embeddings.py. Before timing, the same sentences go to all three
systems at once (so batches mix lengths) and their embeddings must agree.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CONNECTIONS = [32]
PEER_REPLICAS_PER_NODE = 2
TOLERANCE = 1e-4  # max |difference| between two systems' embedding components
CHECK_SENTENCES = 24
REPLICA_TITLE = "ray::ServeReplica:rayserve:MiniLMOnnx"


def repository(work: Path) -> Path:
    from accelserve.tools.examples.minilm import OPTIONS, SOURCE
    from accelserve.tools.export.sentence_transformer import export_sentence_transformer

    models = work / "minilm_models"
    export_sentence_transformer(SOURCE, models, "minilm", OPTIONS)
    return models


def node_cpus(models: Path) -> int:
    """The CPUs one accelserve replica of ``models`` asks Ray for: each node gets that many."""
    from accelserve.config import read_config
    from accelserve.deploy.resources import replica_resources

    configs = [read_config(d) for d in sorted(models.iterdir()) if (d / "config.pbtxt").exists()]
    return int(replica_resources(configs, "cpu").num_cpus)


def texts(count: int = 1024) -> list[str]:
    from benchmarks.server.bench_embeddings import sentences

    return sentences(count)


def data_file(work: Path) -> Path:
    """The load generator's requests: one sentence each."""
    path = work / "minilm_sentences.json"
    path.write_text(json.dumps({"data": [{"text": [t]} for t in texts()]}))
    return path


def bench_options(work: Path) -> dict[str, object]:
    """accelserve.tools.bench settings of the MiniLM step (beyond url, levels, duration)."""
    return {
        "model": "minilm",
        "input_data": str(data_file(work)),
        "shapes": {"text": [1]},  # the text input is optional (input_ids may replace it)
        "warmup_s": 2.0,
        "timeout_s": 60.0,
    }


def peer_command(address: str, port: int, models: Path, work: Path, cpus: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "benchmarks.server.ray_serve_minilm",
        *("--address", address, "--port", str(port), "--repository", str(models)),
        *("--metadata", str(work / "minilm_metadata.json")),
        *("--config", str(work / "minilm_config.json")),
        *("--replicas", str(2 * PEER_REPLICAS_PER_NODE)),
        *("--replica-cpus", str(cpus / PEER_REPLICAS_PER_NODE)),
    ]


def embeddings(url: str, sentences: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(embedding [n, 384], token_count [n, 1]) of ``sentences``, one request each, all at once."""
    import tritonclient.http as httpclient

    def one(text: str) -> tuple[np.ndarray, np.ndarray]:
        client = httpclient.InferenceServerClient(url, network_timeout=60.0)
        try:
            tensor = httpclient.InferInput("text", [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
            result = client.infer("minilm", [tensor])
            vector, count = result.as_numpy("embedding"), result.as_numpy("token_count")
        finally:
            client.close()
        if vector is None or count is None or vector.shape != (1, 384):
            raise RuntimeError(f"{url}: unexpected answer for {text!r}: {result.get_response()}")
        return vector, count

    with ThreadPoolExecutor(len(sentences)) as pool:
        answers = list(pool.map(one, sentences))
    return np.concatenate([a[0] for a in answers]), np.concatenate([a[1] for a in answers])


def check_answers(urls: dict[str, str], reference: str) -> dict[str, float]:
    """Each system's largest difference from ``reference`` over the same sentences; raises
    when one exceeds TOLERANCE or a token count differs."""
    sentences = texts(CHECK_SENTENCES)
    answers = {name: embeddings(url, sentences) for name, url in urls.items()}
    base_vectors, base_counts = answers[reference]
    worst = {}
    for name, (vectors, counts) in answers.items():
        if not np.array_equal(counts, base_counts):
            raise RuntimeError(f"{name}: token counts {counts.ravel()} != {base_counts.ravel()}")
        worst[name] = float(np.abs(vectors - base_vectors).max())
        if worst[name] > TOLERANCE:
            raise RuntimeError(
                f"{name}: embeddings differ from {reference} by up to {worst[name]:.2e} "
                f"(tolerance {TOLERANCE:g})"
            )
    return worst
