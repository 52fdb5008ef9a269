"""accelserve on a real 2-node Ray cluster on this machine (``accelserve serve --ray``).

One cluster for the module (head + one worker node, two CPUs each, so the two replicas of
the repository, two CPU instances each, must land on different nodes), one ``accelserve serve --ray``
process, then: placement, the real tritonclient through Ray's proxy, a killed replica and a
lost worker node under load, and the Serve config.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from tests.conftest import ServerProcess, copy_example
from tests.ray_cluster import FAST_NODE_DEATH, LocalRayCluster, serving_on_ray, two_nodes

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]
pytest.importorskip("ray.serve")

NODE_HEADER = "accelserve-ray-node"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray") / "models"
    simple = copy_example("simple", root)
    # The same model, but its requests wait in the replica's batcher: a replica killed under
    # load surely holds some.
    shutil.copytree(simple, root / "simple_delayed")
    config = (
        (simple / "config.pbtxt").read_text().replace('name: "simple"', 'name: "simple_delayed"')
    )
    config = config.replace(
        "dynamic_batching { }", "dynamic_batching { max_queue_delay_microseconds: 200000 }"
    )
    (root / "simple_delayed" / "config.pbtxt").write_text(config)
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with two_nodes(head_cpus=2, worker_cpus=2, env=FAST_NODE_DEATH) as cluster:
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
    ) as process:
        yield process


def node_ids(cluster: LocalRayCluster) -> set[str]:
    code = (
        f"import ray, json; ray.init(address={cluster.address!r}, logging_level='error');"
        "print(json.dumps([n['NodeID'] for n in ray.nodes() if n['Alive']]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=cluster.env, timeout=120, check=True
    )
    return set(json.loads(result.stdout.decode().strip().splitlines()[-1]))


def infer_json(
    base: str, value: int, http: httpx.Client | None = None, model: str = "simple"
) -> httpx.Response:
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [value] * 16},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        ]
    }
    return (http or httpx).post(f"{base}/v2/models/{model}/infer", json=body, timeout=60)


def test_replicas_run_on_both_nodes(server: ServerProcess, cluster: LocalRayCluster) -> None:
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: infer_json(server.base, i), range(200)))
    assert [r.status_code for r in responses] == [200] * 200
    for i, response in enumerate(responses):
        assert response.json()["outputs"][0]["data"] == [i + k for k in range(16)]
    answered = {r.headers[NODE_HEADER] for r in responses}
    assert answered == node_ids(cluster)
    assert len(answered) == 2


def test_tritonclient_through_the_cluster_endpoint(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.url)
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_model_metadata("simple")["inputs"][0]["shape"] == [-1, 16]
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    b = np.full((2, 16), 3, dtype=np.int32)
    for binary in (True, False):
        inputs = []
        for name, data in (("INPUT0", a), ("INPUT1", b)):
            tensor = httpclient.InferInput(name, list(data.shape), "INT32")
            tensor.set_data_from_numpy(data, binary_data=binary)
            inputs.append(tensor)
        outputs = [
            httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")
        ]
        result = client.infer("simple", inputs, outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def haproxy_children(server: ServerProcess) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            name, parent = stat[stat.index("(") + 1 : stat.rindex(")")], stat.split(") ")[1]
            if name == "haproxy" and int(parent.split()[1]) == server.process.pid:
                found.append(int(entry.name))
    return found


def test_the_front_door_is_haproxy_by_default(server: ServerProcess) -> None:
    assert len(haproxy_children(server)) == 1  # the master (its workers are its children)


def test_grpc_through_the_front_door_reaches_both_nodes(
    server: ServerProcess, cluster: LocalRayCluster
) -> None:
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_model_metadata("simple").inputs[0].shape == [-1, 16]
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = grpcclient.InferInput(name, [2, 16], "INT32")
        tensor.set_data_from_numpy(a)
        inputs.append(tensor)
    before = simple_stats(server.base)["inference_count"]
    per_replica = replica_counts(cluster)
    assert len(per_replica) == 2
    for _ in range(10):
        result = client.infer("simple", inputs)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + a)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - a)
    client.close()
    assert simple_stats(server.base)["inference_count"] - before == 20
    # Per request, not per connection: both replicas served some.
    after = replica_counts(cluster)
    assert sorted(after) == sorted(per_replica)
    assert all(after[url] > per_replica[url] for url in after)


def replica_counts(cluster: LocalRayCluster) -> dict[str, int]:
    """``simple``'s inference count on each replica's own server (the registry's)."""
    code = (
        f"import ray; ray.init(address={cluster.address!r}, logging_level='error');"
        "r = ray.get_actor('accelserve-peers', namespace='accelserve');"
        "print(' '.join(ray.get(r.urls.remote(['accelserve/accelserve-default']))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, env=cluster.env, timeout=120, check=True
    )
    urls = result.stdout.decode().strip().splitlines()[-1].split()
    counts = {}
    for url in urls:
        stats = httpx.get(f"{url}/v2/models/simple/stats", timeout=10)
        if stats.status_code == 200:
            counts[url] = stats.json()["model_stats"][0]["inference_count"]
    return counts


def test_client_errors_keep_their_status_through_ray(server: ServerProcess) -> None:
    response = httpx.post(f"{server.base}/v2/models/nope/infer", json={"inputs": []})
    assert response.status_code == 404
    assert "nope" in response.json()["error"]
    response = httpx.post(
        f"{server.base}/v2/models/simple/infer",
        json={
            "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 15], "data": [0] * 15}]
        },
    )
    assert response.status_code == 400
    assert "error" in response.json()


def simple_stats(base: str, path: str = "/v2/models/stats") -> dict[str, Any]:
    response = httpx.get(base + path, timeout=30)
    assert response.status_code == 200, response.text
    (entry,) = [s for s in response.json()["model_stats"] if s["name"] == "simple"]
    return entry


def test_statistics_are_summed_over_the_replicas(server: ServerProcess) -> None:
    before = simple_stats(server.base)
    before_model = simple_stats(server.base, "/v2/models/simple/stats")
    assert before_model["inference_count"] == before["inference_count"]
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda i: infer_json(server.base, i), range(100)))
    assert [r.status_code for r in responses] == [200] * 100
    assert len({r.headers[NODE_HEADER] for r in responses}) == 2  # both replicas counted some
    after = simple_stats(server.base)
    assert after["inference_count"] - before["inference_count"] == 100
    success = after["inference_stats"]["success"]["count"]
    assert success - before["inference_stats"]["success"]["count"] == 100
    assert (
        simple_stats(server.base, "/v2/models/simple/stats")["inference_count"]
        == after["inference_count"]
    )
    batches = sum(b["compute_infer"]["count"] * b["batch_size"] for b in after["batch_stats"])
    assert batches == after["inference_count"]


def test_statistics_of_an_unknown_model_are_a_404(server: ServerProcess) -> None:
    response = httpx.get(f"{server.base}/v2/models/nope/stats", timeout=30)
    assert response.status_code == 404
    assert "nope" in response.json()["error"]


REPLICA_TITLE = "ray::ServeReplica:accelserve:accelserve-default"


def test_a_killed_replica_costs_no_unary_request(
    server: ServerProcess, cluster: LocalRayCluster
) -> None:
    replicas = cluster.processes(REPLICA_TITLE)
    assert len(replicas) == 2
    half_done = threading.Event()
    done = itertools.count()
    failures: list[str] = []

    def client(worker: int) -> None:
        with httpx.Client(timeout=60) as http:
            for i in range(20):
                value = worker * 1000 + i
                response = infer_json(server.base, value, http, "simple_delayed")
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                elif response.json()["outputs"][0]["data"] != [value + k for k in range(16)]:
                    failures.append(f"wrong answer {response.text}")
                if next(done) == 8 * 20 // 3:
                    half_done.set()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, w) for w in range(8)]
        assert half_done.wait(120)
        os.kill(replicas[0], signal.SIGKILL)
        for future in futures:
            future.result()
    assert failures == [], server.output()[-3000:]
    # Serve replaces the replica: both nodes answer again.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        with ThreadPoolExecutor(8) as pool:
            answered = {
                r.headers[NODE_HEADER]
                for r in pool.map(lambda i: infer_json(server.base, i), range(40))
            }
        if len(answered) == 2 and len(cluster.processes(REPLICA_TITLE)) == 2:
            break
        time.sleep(0.5)
    assert len(answered) == 2, (answered, cluster.processes(REPLICA_TITLE), server.output()[-3000:])


def answering_nodes(base: str, count: int = 16) -> set[str]:
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: infer_json(base, i), range(count)))
    return {r.headers[NODE_HEADER] for r in responses if r.status_code == 200}


def test_a_lost_node_costs_no_unary_request_and_a_new_node_serves(
    server: ServerProcess, cluster: LocalRayCluster
) -> None:
    before = answering_nodes(server.base, 40)
    assert len(before) == 2
    stop, sent = threading.Event(), threading.Semaphore(0)
    failures: list[str] = []
    a = np.arange(16, dtype=np.int32).reshape(1, 16)

    def client() -> None:  # tritonclient, as users run it; every failure is recorded
        triton = httpclient.InferenceServerClient(server.url, network_timeout=120)
        inputs = [httpclient.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(a)
        while not stop.is_set():
            try:
                result = triton.infer("simple", inputs)
                if not np.array_equal(result.as_numpy("OUTPUT0"), a + a):
                    failures.append("wrong answer")
            except Exception as exc:  # InferenceServerException, connection errors
                failures.append(repr(exc))
            sent.release()

    def wait_sent(count: int) -> None:
        for _ in range(count):
            assert sent.acquire(timeout=120), "the clients stopped getting answers"

    with ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(client) for _ in range(6)]
        wait_sent(30)
        cluster.lose_node(cluster.nodes[-1])  # raylet, workers, replica
        deadline = time.monotonic() + 60
        while cluster.alive_nodes() != 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        wait_sent(60)  # the cluster without the node keeps answering
        stop.set()
        for future in clients:
            future.result()
    assert failures == []
    (head,) = answering_nodes(server.base)

    cluster.add_worker()
    joined = time.monotonic()  # the new node has registered ("Ray runtime started")
    answered: set[str] = set()
    while time.monotonic() < joined + 60 and not answered - before:
        answered = answering_nodes(server.base, 8)
    elapsed = time.monotonic() - joined
    print(f"the new node's replica answered {elapsed:.2f} s after the node joined")
    assert answered - before, "no replica on the new node within 60 s"
    assert head in answered or head in answering_nodes(server.base, 16)
    # How soon (issue 12's 5 s target) is measured by benchmarks/server/bench_ray_recovery.py,
    # not asserted here: a wall-clock bound fails on a loaded machine.


def test_deploy_ray_writes_a_serve_config(repository: Path, tmp_path: Path) -> None:
    output = tmp_path / "serve.yaml"
    command = [
        sys.executable,
        "-m",
        "accelserve.cli",
        "deploy",
        "ray",
        "--model-repository",
        str(repository),
        "--replicas",
        "3",
        "--device",
        "cpu",
        "-o",
        str(output),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    config = yaml.safe_load(output.read_text())
    (app,) = config["applications"]
    assert app["import_path"] == "accelserve.deploy.ray:build_app"
    assert app["args"]["model_repository"] == str(repository.resolve())
    deployment, router = app["deployments"]
    assert router["name"] == "accelserve-router"
    assert deployment["name"] == "accelserve-default"
    assert deployment["num_replicas"] == 3
    assert deployment["ray_actor_options"] == {"num_cpus": 2.0}  # one instance per model
    assert deployment["max_ongoing_requests"] == 32  # two models, batches of 8, 2 in flight


def test_deploy_ray_rejects_a_bad_group_with_a_clear_message(repository: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "accelserve.cli",
        "deploy",
        "ray",
        "--model-repository",
        str(repository),
        "--group",
        "g=nope",
    ]
    result = subprocess.run(command, capture_output=True, timeout=120, text=True)
    assert result.returncode == 2
    assert (
        "--group g: expected models of the repository (simple, simple_delayed); received 'nope'"
        in result.stderr
    )
