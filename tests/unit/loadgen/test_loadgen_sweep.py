"""Sweep parsing and latency percentiles (pure functions)."""

from __future__ import annotations

import math

import pytest

from accelserve.tools.bench.sweep import LatencySummary, parse_sweep, percentile


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16", [16]),
        ("1,16,64", [1, 16, 64]),
        ("1:64:x2", [1, 2, 4, 8, 16, 32, 64]),
        ("1:100:x2", [1, 2, 4, 8, 16, 32, 64]),
        ("8:32:8", [8, 16, 24, 32]),
        ("1:4", [1, 2, 3, 4]),
        ("1:10:x3", [1, 3, 9]),
        ("1:8:x1.5", [1, 2, 3, 5, 8]),  # rounded, duplicates removed
        ("4, 1:2, 4", [4, 1, 2]),  # order kept, duplicates removed
        (" 2 : 8 : *2 ", [2, 4, 8]),
    ],
)
def test_parse_sweep_integer(text: str, expected: list[int]) -> None:
    assert parse_sweep(text) == expected


def test_parse_sweep_rates_keep_fractions() -> None:
    assert parse_sweep("0.5,250:1000:x2", integer=False) == [0.5, 250.0, 500.0, 1000.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty sweep"),
        ("0", "positive"),
        ("-4", "positive"),
        ("a", "expected an integer, got 'a'"),
        ("1.5", "expected an integer"),
        ("64:1", "ends (1) before it starts (64)"),
        ("1:64:x1", "factor in '1:64:x1' must be above 1"),
        ("1:64:0", "positive"),
        ("1:2:3:4", "start:end or start:end:step"),
        ("1:100000", "more than 256 levels"),
    ],
)
def test_parse_sweep_errors_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="--concurrency") as info:
        parse_sweep(text)
    assert message in str(info.value)


def test_percentile_nearest_rank() -> None:
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 50) == 50
    assert percentile(values, 90) == 90
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile(values, 0) == 1
    assert percentile([7.0], 99) == 7.0
    assert percentile([1, 2, 3, 4], 50) == 2  # rank ceil(2.0) = 2
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([10, 20, 30], 90) == 30  # rank ceil(2.7) = 3
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        percentile([1], 101)


def test_latency_summary_sorts_and_averages() -> None:
    s = LatencySummary.of([0.004, 0.001, 0.003, 0.002])
    assert (s.count, s.p50, s.p99, s.max) == (4, 0.002, 0.004, 0.004)
    assert s.avg == pytest.approx(0.0025)
    empty = LatencySummary.of([])
    assert empty.count == 0 and math.isnan(empty.p50)
