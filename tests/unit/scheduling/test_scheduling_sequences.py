"""Token-aware batching: the pure functions, the policy parameters, and a real scheduler padding
requests of different lengths into one batch and grouping them by length."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sched_helpers import Build, settle

from accelserve.backends.base import Backend
from accelserve.config import parse_config
from accelserve.devices import Device
from accelserve.errors import ConfigError, InvalidArgumentError
from accelserve.scheduling import BatchingPolicy
from accelserve.scheduling.sequences import (
    SequenceSpec,
    choose_by_length,
    cut_outputs,
    merge_padded,
    plan_chunks,
    sequence_length,
    signature,
    trim,
)
from accelserve.types import InferRequest

SPEC = SequenceSpec(("ids", "mask"), "mask", ("hidden",), 0)


def _req(tokens: list[int], width: int | None = None) -> dict[str, np.ndarray]:
    width = width or len(tokens)
    ids = np.zeros((1, width), np.int64)
    ids[0, : len(tokens)] = tokens
    return {"ids": ids, "mask": (ids != 0).astype(np.int64)}


def test_length_drops_trailing_padding() -> None:
    assert sequence_length(_req([5, 6, 7], width=9), SPEC) == 3
    assert sequence_length(_req([5]), SPEC) == 1
    both = {
        "ids": np.array([[1, 2, 0, 0], [1, 2, 3, 0]]),
        "mask": np.array([[1, 1, 0, 0], [1, 1, 1, 0]]),
    }
    assert sequence_length(both, SPEC) == 3
    no_mask = SequenceSpec(("ids", "mask"))
    assert sequence_length(both, no_mask) == 3


def test_length_allows_wider_inputs_and_refuses_shorter_ones() -> None:
    inputs = {"ids": np.ones((1, 2, 4), np.float32), "mask": np.array([[1, 1, 0, 0, 0]])}
    assert sequence_length(inputs, SequenceSpec(("ids", "mask"), "mask")) == 2
    inputs["mask"] = np.array([[1, 1, 1]])
    with pytest.raises(InvalidArgumentError) as info:
        sequence_length(inputs, SequenceSpec(("ids", "mask"), "mask"))
    assert "input 'ids' has 2 tokens, fewer than the 3 the mask mark" in str(info.value)
    with pytest.raises(InvalidArgumentError) as info:
        sequence_length({"ids": np.array([1, 2])}, SPEC)
    assert "expected [rows, tokens, ...]; received shape [2]" in str(info.value)


def test_an_input_wider_than_its_mask_is_refused() -> None:
    """A mask shorter than the ids would silently drop the ids it does not cover."""
    inputs = {"ids": np.array([[5, 6, 7, 8, 9]]), "mask": np.array([[1, 1, 1]])}
    with pytest.raises(InvalidArgumentError) as info:
        sequence_length(inputs, SPEC)
    assert str(info.value) == (
        "input 'ids' has 5 tokens and 'mask' (its mask) 3: expected the mask to cover every token"
    )


def test_trim_signature_merge_and_cut() -> None:
    short, long = trim(_req([3], width=4), SPEC, 1), _req([4, 5, 6])
    assert (
        short["ids"].shape == (1, 1)
        and np.shares_memory(short["ids"], _req([3], 4)["ids"]) is False
    )
    assert signature(short, SPEC) == signature(long, SPEC)
    merged = merge_padded([short, long], SPEC)
    np.testing.assert_array_equal(merged["ids"], [[3, 0, 0], [4, 5, 6]])
    np.testing.assert_array_equal(merged["mask"], [[1, 0, 0], [1, 1, 1]])
    assert merge_padded([long], SPEC) is long
    parts = [{"hidden": np.ones((1, 3, 2))}, {"hidden": np.ones((1, 3, 2))}]
    cut = cut_outputs(parts, [1, 3], SPEC)
    assert [p["hidden"].shape for p in cut] == [(1, 1, 2), (1, 3, 2)]


@pytest.mark.parametrize(
    ("candidates", "rows", "tokens", "picked"),
    [
        ([(1, 40), (1, 5), (1, 38), (1, 6), (1, 39), (1, 7)], 64, 120, [0, 2, 4]),
        ([(1, 5), (1, 40), (1, 6), (1, 39), (1, 7)], 64, 21, [0, 2, 4]),
        ([(1, 300), (1, 3)], 64, 100, [0]),  # too long for the budget: runs alone
        ([(1, 10)] * 6, 4, 10_000, [0, 1, 2, 3]),  # the row cap still holds
        ([(2, 10), (3, 9), (1, 30)], 64, 10_000, [0, 1, 2]),  # all fit: all go
    ],
)
def test_choose_by_length(candidates: list, rows: int, tokens: int, picked: list) -> None:
    assert choose_by_length(candidates, rows, tokens) == picked


CONFIG = """
name: "enc"
max_batch_size: 8
input [ { name: "ids" data_type: TYPE_INT64 dims: [ -1 ] }, { name: "mask" data_type: TYPE_INT64 dims: [ -1 ] } ]
output [ { name: "hidden" data_type: TYPE_FP32 dims: [ -1, 1 ] } ]
dynamic_batching { }
"""


def _param(key: str, value: str) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


@pytest.mark.parametrize(
    ("candidates", "overhead", "chunks"),
    [
        ([(1, 3), (1, 30)], 0, [[0, 1]]),  # no overhead given: one call
        ([(1, 3)], 50, [[0]]),
        # 2 x 30 = 60 padded tokens in one call; two calls cost 3 + 30 + 2 overheads.
        ([(1, 3), (1, 30)], 10, [[0], [1]]),
        ([(1, 3), (1, 30)], 40, [[0, 1]]),  # a call costs more than the padding saved
        # Sorted by length, cut where the length jumps; indices keep naming the requests.
        ([(1, 20), (1, 2), (1, 21), (1, 3), (1, 2)], 5, [[1, 4, 3], [0, 2]]),
        # Rows count: a 10-row request of 4 tokens is not padded to 30.
        ([(10, 4), (1, 30)], 20, [[0], [1]]),
        ([(1, 5), (1, 5), (1, 5)], 1, [[0, 1, 2]]),  # equal lengths: nothing to save
    ],
)
def test_plan_chunks(candidates: list, overhead: int, chunks: list) -> None:
    assert plan_chunks(candidates, overhead) == chunks


def test_plan_chunks_is_never_worse_than_one_call() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        cands = [
            (int(r), int(n)) for r, n in rng.integers(1, 40, size=(int(rng.integers(1, 20)), 2))
        ]
        overhead = int(rng.integers(0, 60))
        chunks = plan_chunks(cands, overhead)
        assert sorted(i for c in chunks for i in c) == list(range(len(cands)))

        def cost(chunk: list[int], cands: list = cands, overhead: int = overhead) -> int:
            return overhead + sum(cands[i][0] for i in chunk) * max(cands[i][1] for i in chunk)

        assert sum(cost(c) for c in chunks) <= cost(list(range(len(cands))))


def test_policy_reads_the_parameters() -> None:
    text = CONFIG + _param("sequence_inputs", "ids, mask") + _param("sequence_mask", "mask")
    text += _param("sequence_outputs", "hidden") + _param("max_batch_tokens", "64")
    policy = BatchingPolicy.from_config(parse_config(text))
    assert policy.sequence == SequenceSpec(("ids", "mask"), "mask", ("hidden",), 64)
    text += _param("chunk_overhead_tokens", "16")
    policy = BatchingPolicy.from_config(parse_config(text))
    assert policy.sequence == SequenceSpec(("ids", "mask"), "mask", ("hidden",), 64, 16)
    assert BatchingPolicy.from_config(parse_config(CONFIG)).sequence is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"max_batch_tokens": "64"},
            "parameter 'max_batch_tokens': needs parameter 'sequence_inputs'",
        ),
        (
            {"sequence_inputs": "ids", "max_batch_tokens": "lots"},
            "expected an integer >= 0; received 'lots'",
        ),
        (
            {"sequence_inputs": "ids", "chunk_overhead_tokens": "-2"},
            "parameter 'chunk_overhead_tokens': expected an integer >= 0; received '-2'",
        ),
        (
            {"chunk_overhead_tokens": "8"},
            "parameter 'chunk_overhead_tokens': needs parameter 'sequence_inputs'",
        ),
        ({"sequence_inputs": "ids,text"}, "'text' is not one of the model's inputs (ids, mask)"),
        (
            {"sequence_inputs": "ids", "sequence_outputs": "h"},
            "'h' is not one of the model's outputs",
        ),
        (
            {"sequence_inputs": "ids", "sequence_mask": "mask"},
            "expected one of the sequence_inputs (ids)",
        ),
    ],
)
def test_policy_parameter_errors(params: dict, message: str) -> None:
    text = CONFIG + "".join(_param(k, v) for k, v in params.items())
    with pytest.raises(ConfigError) as info:
        BatchingPolicy.from_config(parse_config(text))
    assert message in str(info.value)


def test_policy_refuses_preferred_sizes_with_a_token_budget() -> None:
    with pytest.raises(ConfigError) as info:
        BatchingPolicy(8, True, (4,), sequence=SequenceSpec(("ids",), max_tokens=64))
    assert "cannot also aim at dynamic_batching.preferred_batch_size [4]" in str(info.value)
    with pytest.raises(ConfigError) as info:
        BatchingPolicy(0, sequence=SequenceSpec(("ids",)))
    assert "expected a batching model" in str(info.value)


class Encoder(Backend):
    """hidden[b, t] = ids[b, t] * 10 (FP32 [B, T, 1]); records each batch's ids."""

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.delay, self.gate = delay, gate
        self.batches: list[np.ndarray] = []

    def load(self, version_dir: Path, config: Any, device: Device) -> None:
        self.device = device

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(inputs["ids"].copy())
        time.sleep(self.delay)
        return {"hidden": (inputs["ids"] * 10).astype(np.float32)[:, :, None]}


def _request(tokens: list[int], width: int | None = None) -> InferRequest:
    return InferRequest(inputs=_req(tokens, width))


def test_requests_of_different_lengths_share_a_padded_batch(build: Build) -> None:
    backend = Encoder()
    policy = BatchingPolicy(8, True, sequence=SPEC)
    sched = build(policy, backend)
    lengths = [3, 1, 5, 2]

    async def main() -> list[dict[str, np.ndarray]]:
        reqs = [_request(list(range(1, n + 1)), width=6) for n in lengths]
        return await asyncio.gather(*(sched.infer(r) for r in reqs))

    results = asyncio.run(main())
    assert len(backend.batches) == 1 and backend.batches[0].shape == (4, 5)  # not 6: trimmed
    for n, out in zip(lengths, results, strict=True):
        assert out["hidden"].shape == (1, n, 1)  # cut back to the request's own length
        np.testing.assert_array_equal(out["hidden"][0, :, 0], np.arange(1, n + 1) * 10)


def test_token_budget_groups_similar_lengths(build: Build) -> None:
    gate = threading.Event()
    backend = Encoder(gate=gate)
    sched = build(
        BatchingPolicy(8, True, sequence=SequenceSpec(("ids", "mask"), "mask", ("hidden",), 12)),
        backend,
    )
    lengths = [2, 6, 2, 6, 2, 6]

    async def main() -> None:
        first = asyncio.ensure_future(sched.infer(_request([9])))  # occupies the instance
        await settle()
        rest = [asyncio.ensure_future(sched.infer(_request([7] * n))) for n in lengths]
        await settle()  # queued behind it
        gate.set()
        await asyncio.gather(first, *rest)

    asyncio.run(main())
    shapes = [b.shape for b in backend.batches]
    assert shapes[0] == (1, 1)
    # The oldest waiting request is short: the three short ones go together (3 x 2 tokens),
    # then the long ones, two at a time (2 x 6 = 12 tokens, the budget).
    assert shapes[1:] == [(3, 2), (2, 6), (1, 6)]


def test_a_batch_of_mixed_lengths_runs_as_calls_of_similar_length(build: Build) -> None:
    gate = threading.Event()
    backend = Encoder(gate=gate)
    spec = SequenceSpec(("ids", "mask"), "mask", ("hidden",), 0, chunk_overhead_tokens=4)
    sched = build(BatchingPolicy(8, True, sequence=spec), backend)
    lengths = [2, 12, 1, 11, 2, 12]

    async def main() -> list[dict[str, np.ndarray]]:
        first = asyncio.ensure_future(sched.infer(_request([9])))  # occupies the instance
        await settle()
        rest = [
            asyncio.ensure_future(sched.infer(_request(list(range(1, n + 1))))) for n in lengths
        ]
        await settle()  # queued behind it
        gate.set()
        await first
        return await asyncio.gather(*rest)

    results = asyncio.run(main())
    # One batch of six requests, run as two calls: the short ones, then the long ones.
    assert [b.shape for b in backend.batches] == [(1, 1), (3, 2), (3, 12)]
    for n, out in zip(lengths, results, strict=True):
        assert out["hidden"].shape == (1, n, 1)
        np.testing.assert_array_equal(out["hidden"][0, :, 0], np.arange(1, n + 1) * 10)
    stats = sched.stats
    assert stats.execution_count == 2 and stats.inference_count == 7
