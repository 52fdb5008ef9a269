"""Pure pieces of the Ray ingress: statistics summed over replicas, the model a request
names, server-wide answers combined over groups."""

from __future__ import annotations

import json

from accelserve.deploy.peers import sum_model_stats
from accelserve.deploy.router import combine, model_of


def duration(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def stats(name: str, count: int, last: int, batches: dict[int, int]) -> dict:
    return {
        "name": name,
        "version": "1",
        "last_inference": last,
        "inference_count": count,
        "execution_count": sum(batches.values()),
        "inference_stats": {"success": duration(count, count * 10), "fail": duration(0, 0)},
        "batch_stats": [
            {"batch_size": size, "compute_infer": duration(n, n * 5)} for size, n in batches.items()
        ],
        "memory_usage": [{"type": "CPU", "id": 0, "byte_size": 100}],
    }


def test_replica_statistics_add_up_per_model_and_batch_size():
    one = [stats("a", 3, 1000, {1: 1, 2: 1}), stats("b", 1, 5, {1: 1})]
    two = [stats("a", 4, 2000, {2: 2})]
    (a, b) = sum_model_stats([one, two])
    assert a["inference_count"] == 7
    assert a["execution_count"] == 4
    assert a["last_inference"] == 2000
    assert a["inference_stats"]["success"] == duration(7, 70)
    assert a["batch_stats"] == [
        {"batch_size": 1, "compute_infer": duration(1, 5)},
        {"batch_size": 2, "compute_infer": duration(3, 15)},
    ]
    assert len(a["memory_usage"]) == 2  # one entry per instance, over both replicas
    assert (b["name"], b["version"], b["inference_count"]) == ("b", "1", 1)


def test_one_replica_statistics_are_unchanged():
    entry = stats("a", 3, 1000, {1: 3})
    assert sum_model_stats([[entry]]) == [entry]


def test_the_model_a_request_names():
    assert model_of("/v2/models/simple/infer", b"") == "simple"
    assert model_of("/v2/models/simple/versions/1/stats", b"") == "simple"
    assert model_of("/v2/models/stats", b"") is None
    assert model_of("/v1/models/half_plus:predict", b"") == "half_plus"
    assert model_of("/v2/repository/models/simple/load", b"") == "simple"
    assert model_of("/v1/embeddings", b'{"model": "minilm", "input": "x"}') == "minilm"
    assert model_of("/v1/embeddings", b"not json") is None
    assert model_of("/v1/embeddings", b'{"model": 3}') is None
    assert model_of("/v2/health/ready", b"") is None


JSON = [(b"content-type", b"application/json")]


def test_server_wide_answers_combine_over_groups():
    stats_a = (200, JSON, json.dumps({"model_stats": [{"name": "a"}]}).encode())
    stats_b = (200, JSON, json.dumps({"model_stats": [{"name": "b"}]}).encode())
    status, _, body = combine("/v2/models/stats", [stats_a, stats_b])
    assert (status, json.loads(body)) == (200, {"model_stats": [{"name": "a"}, {"name": "b"}]})
    index = combine("/v2/repository/index", [(200, JSON, b'[{"name": "a"}]'), (200, JSON, b"[]")])
    assert json.loads(index[2]) == [{"name": "a"}]
    not_ready = (503, JSON, b"{}")
    assert combine("/v2/health/ready", [(200, JSON, b"{}"), not_ready]) == not_ready
    assert combine("/v2/health/ready", [])[0] == 503
