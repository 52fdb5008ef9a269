"""Request isolation: a batch that fails runs again in halves, then singly, so each good request
still gets its answer and only the request whose data fails the backend gets an error (real
threads, real asyncio, the Doubler backend: a negative value fails any batch holding it)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sched_helpers import Build, Doubler, check, request

from accelserve.errors import (
    InvalidArgumentError,
    ModelExecutionError,
    ModelInputError,
    ServerFaultError,
)
from accelserve.scheduling import BatchingPolicy
from accelserve.scheduling.isolation import isolate


def dynamic(max_batch_size: int = 8, **kwargs: object) -> BatchingPolicy:
    return BatchingPolicy(max_batch_size=max_batch_size, dynamic=True, **kwargs)  # type: ignore[arg-type]


async def _all(sched: object, values: list[int]) -> list[object]:
    infer = sched.infer  # type: ignore[attr-defined]
    return await asyncio.gather(*(infer(request(v)) for v in values), return_exceptions=True)


class InputRefuser(Doubler):
    """Refuses a negative value as the client's fault, as a backend boundary does."""

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = inputs["x"]
        self.batches.append([int(v) for v in x[:, 0]])
        if (x < 0).any():
            raise ModelInputError(f"input 'x' holds {int(x.min())}; expected values >= 0")
        return {"y": x * 2}


class OutOfMemory(Doubler):
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.batches.append([int(v) for v in inputs["x"][:, 0]])
        raise ServerFaultError("ONNX Runtime ran out of memory")


def test_good_requests_in_a_failing_batch_are_all_answered(build: Build) -> None:
    backend = Doubler()
    sched = build(dynamic(4), backend)
    results = asyncio.run(_all(sched, [0, -1, 2, 3, 4, 5, 6, 7]))  # -1 poisons the first batch

    assert backend.batches == [[0, -1, 2, 3], [0, -1], [0], [-1], [2, 3], [4, 5, 6, 7]]
    bad = results[1]
    assert isinstance(bad, ModelExecutionError) and not isinstance(bad, InvalidArgumentError)
    assert str(bad).startswith("model 'm' failed to execute a batch of size 1: ")
    assert "RuntimeError: negative input in model.onnx" in str(bad) and "/srv" not in str(bad)
    for i, result in enumerate(results):
        if i != 1:
            check(result, i)  # type: ignore[arg-type]
    stats = sched.stats
    assert stats.isolation_retries == 4  # [0, -1], [0], [-1], [2, 3]
    assert stats.fail_reasons == {"BACKEND": 1}
    assert (stats.success.count, stats.inference_count) == (7, 7)
    assert stats.execution_count == 3  # the calls that answered: [0], [2, 3], [4..7]
    assert {size: s.compute_infer.count for size, s in stats.batch.items()} == {1: 1, 2: 1, 4: 1}
    assert stats.queue.count == stats.compute_infer.count == 7
    assert stats.as_dict()["isolation_retry_count"] == 4
    assert sched.pending == stats.pending == 0


def test_the_request_with_bad_data_gets_an_invalid_argument_naming_it(build: Build) -> None:
    backend = InputRefuser()
    sched = build(dynamic(8), backend)
    values = [10, 11, 12, 13, 14, -7, 16, 17]
    results = asyncio.run(_all(sched, values))

    bad = results[5]
    assert isinstance(bad, ModelInputError)
    assert str(bad) == "model 'm': input 'x' holds -7; expected values >= 0"
    for i, result in enumerate(results):
        if i != 5:
            check(result, values[i])  # type: ignore[arg-type]
    # 8 -> [10..13] ok, [14, -7, 16, 17] -> [14, -7] -> [14] ok, [-7]; [16, 17] ok
    assert backend.batches[1:] == [
        [10, 11, 12, 13],
        [14, -7, 16, 17],
        [14, -7],
        [14],
        [-7],
        [16, 17],
    ]
    assert sched.stats.isolation_retries == 6


def test_multi_row_requests_keep_their_rows_when_isolated(build: Build) -> None:
    backend = Doubler()
    sched = build(dynamic(8), backend)

    async def main() -> list[object]:
        return await asyncio.gather(
            sched.infer(request(3, rows=3)),
            sched.infer(request(-2, rows=2)),
            sched.infer(request(5, rows=2)),
            return_exceptions=True,
        )

    good, bad, other = asyncio.run(main())
    check(good, 3, rows=3)  # type: ignore[arg-type]
    check(other, 5, rows=2)  # type: ignore[arg-type]
    assert isinstance(bad, ModelExecutionError) and "batch of size 2" in str(bad)
    assert sched.stats.inference_count == 5


def test_output_that_cannot_be_split_fails_only_the_request_that_causes_it(build: Build) -> None:
    """999 makes the Doubler return one row too few: alone, that request still cannot be split."""
    sched = build(dynamic(4), Doubler())
    good, bad = asyncio.run(_all(sched, [1, 999]))
    check(good, 1)  # type: ignore[arg-type]
    assert isinstance(bad, ModelExecutionError)
    assert "batch of size 1" in str(bad) and "first dimension of 1" in str(bad)


def test_every_request_bad_fails_each_alone_after_2n_minus_2_calls(build: Build) -> None:
    sched = build(dynamic(4), InputRefuser())
    results = asyncio.run(_all(sched, [-1, -2, -3, -4]))
    for value, result in zip([-1, -2, -3, -4], results, strict=True):
        assert isinstance(result, ModelInputError)
        assert f"holds {value};" in str(result)
    assert sched.stats.isolation_retries == 6
    assert sched.stats.fail_reasons == {"BACKEND": 4}
    assert sched.stats.execution_count == 0


def test_a_server_fault_is_not_retried(build: Build) -> None:
    backend = OutOfMemory()
    sched = build(dynamic(4), backend)
    results = asyncio.run(_all(sched, [1, 2, 3]))
    assert backend.batches == [[1, 2, 3]]
    for result in results:
        assert isinstance(result, ModelExecutionError) and not isinstance(result, ModelInputError)
        assert "batch of size 3" in str(result) and "out of memory" in str(result)
    assert sched.stats.isolation_retries == 0


def test_a_model_without_dynamic_batching_is_never_retried(build: Build) -> None:
    """One request per call (Triton's default and sequence schedulers): its own error, as is."""
    backend = InputRefuser()
    sched = build(BatchingPolicy(max_batch_size=4), backend)
    results = asyncio.run(_all(sched, [1, -1, 2]))
    assert backend.batches == [[1], [-1], [2]]
    assert isinstance(results[1], ModelInputError)
    check(results[0], 1)  # type: ignore[arg-type]
    check(results[2], 2)  # type: ignore[arg-type]
    assert sched.stats.isolation_retries == 0


def test_preserve_ordering_still_answers_in_arrival_order(build: Build) -> None:
    sched = build(dynamic(4, preserve_ordering=True), Doubler())
    results = asyncio.run(_all(sched, [1, 2, -3, 4]))
    assert isinstance(results[2], ModelExecutionError)
    for i in (0, 1, 3):
        check(results[i], i + 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "calls"),
    [(set(), 2), ({0}, 6), ({7}, 6), ({2, 5}, 10), (set(range(8)), 14)],
)
def test_isolate_splits_only_the_failing_parts(bad: set[int], calls: int) -> None:
    seen: list[list[int]] = []

    def run(group: list[int]) -> tuple[list[dict[str, np.ndarray]], int, int, int, int]:
        seen.append(group)
        if bad & set(group):
            raise ValueError(f"bad {sorted(bad & set(group))}")
        return [{"y": np.array([i])} for i in group], 0, 1, 2, 3

    outcome = isolate(run, [1] * 8)
    assert outcome.retries == len(seen) == calls
    for i in range(8):
        if i in bad:
            assert outcome.parts[i] is None and str(outcome.errors[i]) == f"bad [{i}]"
        else:
            assert outcome.errors[i] is None and outcome.parts[i]["y"][0] == i  # type: ignore[index]
    assert sum(run.rows for run in outcome.runs) == 8 - len(bad)
