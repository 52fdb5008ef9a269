"""The cluster endpoint's server-wide answers on a real 2-node Ray cluster: ``/metrics`` from
every replica (labelled by node), repository control reaching every replica, and the
``openai`` client on the MiniLM example pipeline.

Head and worker node have 5 CPUs each, one replica's need (simple: 1, the four MiniLM steps:
4), so the two replicas of the repository land one on each node.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from accelserve.tools.examples.minilm import OPTIONS, SOURCE
from accelserve.tools.export.sentence_transformer import export_sentence_transformer
from tests.conftest import ServerProcess, copy_example
from tests.ray_cluster import LocalRayCluster, serving_on_ray, two_nodes

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
pytest.importorskip("ray.serve")

API_KEY = "control-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
NODE_HEADER = "accelserve-ray-node"
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue."]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray_control") / "models"
    copy_example("simple", root)
    export_sentence_transformer(SOURCE, root, "minilm", OPTIONS)  # cached after the first run
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with two_nodes(head_cpus=5, worker_cpus=5) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server(cluster: LocalRayCluster, repository: Path) -> Iterator[ServerProcess]:
    with serving_on_ray(
        repository,
        cluster,
        "--replicas",
        "2",
        "--device",
        "cpu",
        "--model-control-mode",
        "explicit",
        "--api-key",
        API_KEY,
    ) as process:
        yield process


def ray_query(cluster: LocalRayCluster, expression: str) -> object:
    """``expression`` evaluated in a driver of the cluster (``ray`` imported), as JSON."""
    code = (
        f"import ray, json; ray.init(address={cluster.address!r}, logging_level='error');"
        f"print(json.dumps({expression}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=cluster.env, timeout=120, check=True
    )
    return json.loads(result.stdout.decode().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def replica_urls(server: ServerProcess, cluster: LocalRayCluster) -> list[str]:
    """Each replica's own accelserve server, from the registry the router reads."""
    deadline = time.monotonic() + 60
    while True:
        urls = ray_query(
            cluster,
            "ray.get(ray.get_actor('accelserve-peers', namespace='accelserve')"
            ".urls.remote(['accelserve/accelserve-default']))",
        )
        assert isinstance(urls, list)
        if len(urls) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(urls) == 2, urls
    return urls


def infer(base: str, value: int) -> httpx.Response:
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [value] * 16},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        ]
    }
    return httpx.post(f"{base}/v2/models/simple/infer", json=body, timeout=60)


def simple_counts(text: str) -> dict[str, float]:
    """``nv_inference_count`` of simple per node, from an exposition."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("nv_inference_count") and sample.labels["model"] == "simple":
                node = sample.labels["node"]
                counts[node] = counts.get(node, 0) + sample.value
    return counts


def test_metrics_gather_every_replica_labelled_by_node(
    server: ServerProcess, cluster: LocalRayCluster
) -> None:
    before = httpx.get(f"{server.base}/metrics", timeout=30)
    assert before.status_code == 200, before.text
    assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: infer(server.base, i), range(60)))
    assert [r.status_code for r in responses] == [200] * 60
    answered = {r.headers[NODE_HEADER] for r in responses}
    after = httpx.get(f"{server.base}/metrics", timeout=30).text
    names = [f.name for f in text_string_to_metric_families(after)]
    assert len(names) == len(set(names))  # one HELP/TYPE per family
    counts, counted = simple_counts(before.text), simple_counts(after)
    nodes = ray_query(cluster, "sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])")
    assert sorted(counted) == nodes == sorted(answered)
    assert sum(counted.values()) - sum(counts.values()) == 60
    replicas = {
        (s.labels["node"], s.labels["replica"])
        for f in text_string_to_metric_families(after)
        if f.name == "nv_cpu_utilization"
        for s in f.samples
    }
    assert len(replicas) == 2
    # The same exposition on --metrics-port, where Prometheus looks for a server's metrics.
    scraped = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30)
    assert scraped.status_code == 200
    assert sum(simple_counts(scraped.text).values()) == sum(counted.values())
    assert httpx.get(f"http://127.0.0.1:{server.metrics_port}/nope", timeout=30).status_code == 404


def model_ready(url: str, model: str) -> int:
    return httpx.get(f"{url}/v2/models/{model}/ready", timeout=30).status_code


def test_unload_and_load_reach_every_replica(
    server: ServerProcess, replica_urls: list[str]
) -> None:
    assert [model_ready(url, "simple") for url in replica_urls] == [200, 200]
    unload = f"{server.base}/v2/repository/models/simple/unload"
    response = httpx.post(unload, headers=AUTH, timeout=60)
    assert response.status_code == 200, response.text
    assert [model_ready(url, "simple") for url in replica_urls] == [400, 400]
    assert model_ready(server.base, "simple") == 400
    response = httpx.post(
        f"{server.base}/v2/repository/models/simple/load", headers=AUTH, timeout=120
    )
    assert response.status_code == 200, response.text
    assert [model_ready(url, "simple") for url in replica_urls] == [200, 200]
    assert infer(server.base, 1).status_code == 200


def test_control_failures_name_the_replica(server: ServerProcess, replica_urls: list[str]) -> None:
    response = httpx.post(f"{server.base}/v2/repository/models/nope/load", headers=AUTH, timeout=60)
    assert response.status_code == 404
    error = response.json()["error"]
    assert "failed to load 'nope'" in error
    assert "replica" in error and any(url in error for url in replica_urls)
    response = httpx.post(f"{server.base}/v2/repository/models/simple/unload", timeout=60)
    assert response.status_code == 401
    assert "API key" in response.json()["error"]
    assert [model_ready(url, "simple") for url in replica_urls] == [200, 200]


def test_openai_embeddings_through_the_cluster(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0)
    assert "minilm" in [m.id for m in client.models.list().data]
    response = client.embeddings.create(model="minilm", input=SENTENCES)
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # the two sentences about eating
    assert response.usage.prompt_tokens > 0
    # Both replicas give the same embedding (each answer names its node).
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.post(
                    f"{server.base}/v1/embeddings",
                    json={"model": "minilm", "input": SENTENCES[0]},
                    timeout=60,
                ),
                range(24),
            )
        )
    assert {a.status_code for a in answers} == {200}
    assert len({a.headers[NODE_HEADER] for a in answers}) == 2
    for answer in answers:
        got = np.array(answer.json()["data"][0]["embedding"], dtype=np.float32)
        np.testing.assert_allclose(got, vectors[0], atol=1e-4)
    with pytest.raises(openai.NotFoundError, match="nope"):
        client.embeddings.create(model="nope", input="x")
