"""Server-side breakdown from /stats snapshots, in the HTTP JSON and the gRPC dict forms."""

from __future__ import annotations

import math

import pytest

from accelserve.tools.bench.serverstats import delta, snapshot


def _stats(success, fail, queue_ns, infer_ns, rows, execs, version="1", as_str=False):
    conv = str if as_str else int
    phase = lambda c, ns: {"count": conv(c), "ns": conv(ns)}  # noqa: E731
    return {
        "name": "simple",
        "version": version,
        "inference_count": conv(rows),
        "execution_count": conv(execs),
        "inference_stats": {
            "success": phase(success, success * 100_000),
            "fail": phase(fail, fail * 1_000),
            "queue": phase(success, queue_ns),
            "compute_input": phase(success, success * 1_000),
            "compute_infer": phase(success, infer_ns),
            "compute_output": phase(success, success * 2_000),
        },
    }


def test_delta_gives_per_request_averages() -> None:
    before = snapshot({"model_stats": [_stats(10, 1, 100_000, 500_000, 10, 10)]}, "simple")
    after = snapshot({"model_stats": [_stats(110, 3, 2_100_000, 4_500_000, 410, 60)]}, "simple")
    d = delta(before, after)
    assert (d.requests, d.failed, d.total) == (100, 2, 102)
    assert (d.inferences, d.executions) == (400, 50)
    assert d.avg_batch == 8.0
    assert d.queue_us == pytest.approx(20.0)  # 2,000,000 ns / 100
    assert d.compute_infer_us == pytest.approx(40.0)
    assert d.compute_input_us == pytest.approx(1.0)
    assert d.compute_output_us == pytest.approx(2.0)
    assert d.request_us == pytest.approx(100.0)
    assert d.overhead_us == pytest.approx(100.0 - 20 - 1 - 40 - 2)


def test_grpc_form_strings_and_omitted_zeros() -> None:
    """MessageToDict gives uint64 as strings and leaves zero fields out."""
    before_entry = _stats(5, 0, 50_000, 100_000, 5, 5, as_str=True)
    del before_entry["inference_stats"]["fail"]
    after_entry = _stats(25, 0, 250_000, 300_000, 25, 20, as_str=True)
    d = delta(
        snapshot({"model_stats": [before_entry]}, "simple"),
        snapshot({"model_stats": [after_entry]}, "simple"),
    )
    assert (d.requests, d.failed, d.executions) == (20, 0, 15)
    assert d.queue_us == pytest.approx(10.0)


def test_versions_are_summed_or_selected() -> None:
    stats = {"model_stats": [_stats(10, 0, 0, 0, 10, 10, "1"), _stats(5, 0, 0, 0, 5, 5, "2")]}
    assert snapshot(stats, "simple").phases["success"][0] == 15
    assert snapshot(stats, "simple", "2").phases["success"][0] == 5


def test_no_traffic_gives_nan_times_not_division_errors() -> None:
    s = snapshot({"model_stats": [_stats(3, 0, 0, 0, 3, 3)]}, "simple")
    d = delta(s, s)
    assert d.total == 0 and math.isnan(d.queue_us) and math.isnan(d.avg_batch)


def test_unknown_model_is_an_error_not_zero_traffic() -> None:
    with pytest.raises(ValueError, match=r"do not list model 'other'; they list \['simple'\]"):
        snapshot({"model_stats": [_stats(1, 0, 0, 0, 1, 1)]}, "other")
