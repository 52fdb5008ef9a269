"""The cluster's /metrics: several replicas' Prometheus texts merged into one exposition, each
sample labelled with its node and replica (``deploy.exposition``), read back with
prometheus_client's own parser."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from accelserve.deploy.exposition import merge_expositions
from accelserve.deploy.fanout import PeerGone, parse_response

TRITON_STYLE = """\
# HELP nv_inference_count Number of inferences performed (a batch of n counts n)
# TYPE nv_inference_count counter
nv_inference_count{model="simple",version="1"} 12
nv_inference_count{model="other",version="1"} 3
# HELP nv_inference_first_response_histogram_ms Duration from request to response
# TYPE nv_inference_first_response_histogram_ms histogram
nv_inference_first_response_histogram_ms_bucket{model="simple",version="1",le="1"} 4
nv_inference_first_response_histogram_ms_bucket{model="simple",version="1",le="+Inf"} 12
nv_inference_first_response_histogram_ms_count{model="simple",version="1"} 12
nv_inference_first_response_histogram_ms_sum{model="simple",version="1"} 7.5
# HELP nv_cpu_utilization CPU utilization rate [0.0 - 1.0] since the last scrape
# TYPE nv_cpu_utilization gauge
nv_cpu_utilization 0.25
"""


def families(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    result: dict[str, list[tuple[str, dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in result, f"family {family.name} declared twice"
        result[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return result


def test_every_sample_names_its_node_and_replica_once_per_family() -> None:
    nodes = [
        ({"node": "n1", "replica": "r1"}, TRITON_STYLE),
        ({"node": "n2", "replica": "r2"}, TRITON_STYLE.replace(" 12\n", " 40\n")),
    ]
    merged = merge_expositions(nodes)
    assert merged.count("# TYPE nv_inference_count counter") == 1
    assert merged.count("# HELP nv_cpu_utilization ") == 1
    found = families(merged)
    # The text keeps Triton's counter names; prometheus_client's parser reads them as "_total".
    assert 'nv_inference_count{node="n1",replica="r1",model="simple",version="1"} 12\n' in merged
    count = found["nv_inference_count"]
    assert (
        "nv_inference_count_total",
        {"node": "n1", "replica": "r1", "model": "simple", "version": "1"},
        12.0,
    ) in count
    assert (
        "nv_inference_count_total",
        {"node": "n2", "replica": "r2", "model": "simple", "version": "1"},
        40.0,
    ) in count
    assert len(count) == 4
    assert found["nv_cpu_utilization"] == [
        ("nv_cpu_utilization", {"node": "n1", "replica": "r1"}, 0.25),
        ("nv_cpu_utilization", {"node": "n2", "replica": "r2"}, 0.25),
    ]
    histogram = found["nv_inference_first_response_histogram_ms"]
    assert len(histogram) == 8  # 2 buckets + count + sum, per replica
    assert {s[1]["node"] for s in histogram} == {"n1", "n2"}
    assert (
        "nv_inference_first_response_histogram_ms_sum",
        {"node": "n2", "replica": "r2", "model": "simple", "version": "1"},
        7.5,
    ) in histogram


def test_counters_keep_their_exact_integers() -> None:
    text = "# TYPE big counter\nbig 123456789012345678\n"
    merged = merge_expositions([({"node": "a"}, text)])
    assert 'big{node="a"} 123456789012345678\n' in merged


def test_prometheus_client_output_with_total_and_created_samples() -> None:
    registry = CollectorRegistry()
    requests = Counter("requests", "Requests", ["route"], registry=registry)
    requests.labels(route="/v2").inc(3)
    Gauge("empty_labels", "No labels", registry=registry).set(2)
    latency = Histogram("latency_seconds", "Latency", buckets=(0.1, 1.0), registry=registry)
    latency.observe(0.5)
    text = generate_latest(registry).decode()
    merged = merge_expositions(
        [({"node": "a", "replica": "1"}, text), ({"node": "b", "replica": "2"}, text)]
    )
    found = families(merged)
    assert [s[1]["node"] for s in found["requests"] if s[0] == "requests_total"] == ["a", "b"]
    assert found["empty_labels"] == [
        ("empty_labels", {"node": "a", "replica": "1"}, 2.0),
        ("empty_labels", {"node": "b", "replica": "2"}, 2.0),
    ]
    buckets = [s for s in found["latency_seconds"] if s[0] == "latency_seconds_bucket"]
    assert len(buckets) == 6  # 0.1, 1.0, +Inf for each replica


def test_label_values_are_escaped() -> None:
    merged = merge_expositions([({"node": 'a"b\\c\nd'}, "# TYPE up gauge\nup{} 1\n")])
    ((name, labels, value),) = families(merged)["up"]
    assert (name, labels, value) == ("up", {"node": 'a"b\\c\nd'}, 1.0)


def test_untyped_samples_and_a_family_typed_differently_by_a_later_replica() -> None:
    first = "loose_metric 1\n# TYPE custom gauge\ncustom 5\n"
    second = "loose_metric 2\n# TYPE custom counter\ncustom 6\n"
    merged = merge_expositions([({"node": "a"}, first), ({"node": "b"}, second)])
    found = families(merged)
    assert [s[2] for s in found["loose_metric"]] == [1.0, 2.0]
    assert found["custom"] == [("custom", {"node": "a"}, 5.0)]  # the first's type wins
    assert merged.count("# TYPE custom") == 1


def test_no_source_gives_an_empty_exposition() -> None:
    assert merge_expositions([]) == ""


def test_a_replica_answer_is_parsed() -> None:
    data = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nAccelServe-Ray-Node: n1\r\n\r\nno"
    )
    assert parse_response(data) == (
        404,
        {"content-type": "text/plain", "accelserve-ray-node": "n1"},
        b"no",
    )
    with pytest.raises(PeerGone, match="not an HTTP answer"):
        parse_response(b"garbage")
