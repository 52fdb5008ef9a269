"""Autoscaling with the front door on a real 2-node Ray cluster (``accelserve serve --ray
--autoscale 1:2 --ray-ingress haproxy``): load sent only to HAProxy, which passes Serve's
request path, makes Serve add a replica (the replicas report their own requests in flight:
deploy/autoscale.py), the new replica answers through the front door and no request fails;
once the load stops, Serve removes one and the front door stops sending to it.

One CPU per node and one per replica: the second replica can only start on the other node.
Serve's delays and look-back are set short with ``--autoscale-setting`` (its defaults wait 30 s
to add a replica and 10 minutes to remove one).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ServerProcess, copy_example
from tests.ray_cluster import LocalRayCluster, serving_on_ray, two_nodes

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
pytest.importorskip("ray.serve")

NODE_HEADER = "accelserve-ray-node"
REPLICA_HEADER = "accelserve-ray-replica"  # a replica's own server names itself
REPLICA_TITLE = "ray::ServeReplica:accelserve:accelserve-default"
MODEL = "simple_delayed"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One model whose requests wait 200 ms in the batcher: a few clients keep several
    requests in flight on a replica."""
    base = tmp_path_factory.mktemp("ray_autoscale")
    simple = copy_example("simple", base / "build")
    root = base / "models"
    shutil.copytree(simple, root / MODEL)
    config = (simple / "config.pbtxt").read_text().replace('name: "simple"', f'name: "{MODEL}"')
    config = config.replace(
        "dynamic_batching { }", "dynamic_batching { max_queue_delay_microseconds: 200000 }"
    )
    assert "200000" in config
    (root / MODEL / "config.pbtxt").write_text(config)
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    with two_nodes(head_cpus=1, worker_cpus=1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def server(cluster: LocalRayCluster, repository: Path) -> Iterator[ServerProcess]:
    with serving_on_ray(
        repository,
        cluster,
        "--autoscale",
        "1:2",
        "--ray-ingress",
        "haproxy",
        "--device",
        "cpu",
        # two requests per replica (a full batch is the default target: 8)
        "--autoscale-setting",
        "target_ongoing_requests=2",
        "--autoscale-setting",
        "upscale_delay_s=0",
        "--autoscale-setting",
        "downscale_delay_s=2",
        "--autoscale-setting",
        "look_back_period_s=2",
        "--autoscale-setting",
        "metrics_interval_s=0.5",
    ) as process:
        yield process


def infer(base: str, value: int, http: httpx.Client) -> httpx.Response:
    body = {
        "inputs": [
            {"name": "INPUT0", "datatype": "INT32", "shape": [1, 16], "data": [value] * 16},
            {"name": "INPUT1", "datatype": "INT32", "shape": [1, 16], "data": list(range(16))},
        ]
    }
    return http.post(f"{base}/v2/models/{MODEL}/infer", json=body, timeout=60)


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.25)
    return condition()


def test_front_door_load_adds_a_replica_and_idling_removes_it(
    server: ServerProcess, cluster: LocalRayCluster
) -> None:
    assert len(cluster.processes(REPLICA_TITLE)) == 1
    heavy, light = threading.Event(), threading.Event()  # stop the load, stop the last client
    failures: list[str] = []
    replicas: set[str] = set()
    nodes: set[str] = set()
    answered = itertools.count()
    last = [0]  # answers so far (the count is read without consuming it)

    def client(worker: int, stop: threading.Event) -> None:
        with httpx.Client() as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                value = worker * 100000 + i
                try:
                    response = infer(server.base, value, http)
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                elif response.json()["outputs"][0]["data"] != [value + k for k in range(16)]:
                    failures.append(f"wrong answer {response.text}")
                else:  # the front door answers from a replica's own server
                    replicas.add(response.headers[REPLICA_HEADER])
                    nodes.add(response.headers[NODE_HEADER])
                    last[0] = next(answered) + 1

    def replica_processes() -> int:
        return len(cluster.processes(REPLICA_TITLE))

    with ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(client, 0, light)]
        clients += [pool.submit(client, w, heavy) for w in range(1, 6)]
        # 6 requests in flight against a target of 2 per replica: Serve wants 3, max 2.
        scaled = wait_for(lambda: len(replicas) == 2 or bool(failures), 150)
        heavy.set()
        # One request at a time is half a replica's target: Serve removes one replica while
        # this client keeps sending through the front door, then it goes on on the other.
        removed = scaled and not failures and wait_for(lambda: replica_processes() == 1, 120)
        after = last[0]
        kept_answering = removed and wait_for(lambda: last[0] >= after + 10, 60)
        light.set()
        for future in clients:
            future.result()
    output = server.output()[-3000:]
    assert failures == [], output
    assert scaled, (replicas, cluster.processes(REPLICA_TITLE), output)
    assert len(nodes) == 2  # one CPU per node: the new replica runs on the other node
    assert removed, (cluster.processes(REPLICA_TITLE), output)
    assert kept_answering, output

    # The front door sends only to the replica left.
    with httpx.Client() as http:
        answers = [infer(server.base, i, http) for i in range(12)]
    assert [a.status_code for a in answers] == [200] * 12, [a.text for a in answers]
    assert len({a.headers.get(REPLICA_HEADER) for a in answers}) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--autoscale", "1:2", "--autoscale-setting", "upscale_delay_s=-1"],
            "--autoscale-setting upscale_delay_s: expected a number >= 0; received '-1'",
        ),
        (
            ["--autoscale", "1:2", "--autoscale-setting", "delay=1"],
            "--autoscale-setting: expected a KEY among target_ongoing_requests, ",
        ),
        (
            ["--autoscale-setting", "upscale_delay_s=1"],
            "--autoscale-setting: expected with --autoscale MIN:MAX; received upscale_delay_s",
        ),
    ],
)
def test_a_bad_autoscale_setting_is_refused_by_the_command(
    repository: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    command = [sys.executable, "-m", "accelserve.cli", "deploy", "ray"]
    command += ["--model-repository", str(repository), "-o", str(tmp_path / "s.yaml"), *args]
    result = subprocess.run(command, capture_output=True, timeout=120, text=True)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "s.yaml").exists()


def test_deploy_ray_writes_the_policy_and_settings(repository: Path, tmp_path: Path) -> None:
    output = tmp_path / "serve.yaml"
    command = [sys.executable, "-m", "accelserve.cli", "deploy", "ray"]
    command += ["--model-repository", str(repository), "-o", str(output), "--autoscale", "1:3"]
    command += ["--autoscale-setting", "downscale_delay_s=60"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    (app,) = yaml.safe_load(output.read_text())["applications"]
    config = app["deployments"][0]["autoscaling_config"]
    assert config["policy"] == {"policy_function": "accelserve.deploy.autoscale:front_door_policy"}
    assert (config["min_replicas"], config["max_replicas"]) == (1, 3)
    assert config["downscale_delay_s"] == 60.0
    assert app["args"]["autoscale_settings"] == {"downscale_delay_s": 60.0}
