"""Token-aware batching for text models: pure functions, tested without asyncio.

A text model's ``sequence_inputs`` (e.g. ``input_ids``, ``attention_mask``: [rows, tokens])
vary in length from request to request. Requests of different lengths still share a batch:
each is padded with zeros to the longest of the batch, and the ``sequence_outputs`` (e.g. the
token embeddings) are cut back to each request's own length when the batch is split.

A request's length is the width of its sequence inputs after dropping trailing padding: the
columns where ``sequence_mask`` (or, without one, every sequence input) is zero in every row.
That undoes the padding an earlier step (a tokenizer batching other sentences) added.

With ``max_batch_tokens``, a batch costs rows x its longest length (the padded work), and the
batcher picks, around the oldest request, the queued requests of similar length that fit:
short sentences go together, long ones together, instead of every short one being padded to
the longest one in the queue.

With ``chunk_overhead_tokens`` (the cost of one more backend call, in padded tokens), a batch
whose lengths differ runs as several calls, each on requests of similar length
(``plan_chunks``): the padding saved outweighs the extra calls when the queue held no better
batch to choose (e.g. closed-loop clients, as many in flight as the instances take).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from accelserve.errors import ConfigError, InvalidArgumentError, ModelExecutionError


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    inputs: tuple[str, ...]  # axis 1 is the token axis; padded with zeros
    mask: str = ""  # the input whose zeros mark padding ("" = all sequence inputs)
    outputs: tuple[str, ...] = ()  # axis 1 is the token axis; cut back per request
    max_tokens: int = 0  # 0: batches are capped by rows only
    chunk_overhead_tokens: int = 0  # 0: one backend call per batch (see plan_chunks)

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ConfigError("parameter 'sequence_inputs': expected at least one input name")
        if self.mask and self.mask not in self.inputs:
            raise ConfigError(
                f"parameter 'sequence_mask': expected one of the sequence_inputs "
                f"({', '.join(self.inputs)}); received {self.mask!r}"
            )
        if self.max_tokens < 0:
            raise ConfigError(
                f"parameter 'max_batch_tokens': expected an integer >= 0; received {self.max_tokens}"
            )
        if self.chunk_overhead_tokens < 0:
            raise ConfigError(
                "parameter 'chunk_overhead_tokens': expected an integer >= 0; received "
                f"{self.chunk_overhead_tokens}"
            )


def sequence_length(inputs: Mapping[str, np.ndarray], spec: SequenceSpec) -> int:
    """The request's length without trailing padding (at least 1 when it has any column).

    Sequence inputs may be wider than that (padded by different steps); raises
    ``InvalidArgumentError`` when one is shorter, or is not at least 2-d."""
    present = [(name, inputs[name]) for name in spec.inputs if name in inputs]
    for name, array in present:
        if array.ndim < 2:
            raise InvalidArgumentError(
                f"input '{name}' is a sequence input: expected [rows, tokens, ...]; received "
                f"shape {list(array.shape)}"
            )
    if not present:
        return 0
    marked = [(n, a) for n, a in present if n == spec.mask] or present
    used = 0
    for _, array in marked:
        if array.shape[1] == 0:
            continue
        flat = array.reshape(array.shape[0], array.shape[1], -1)
        columns = np.flatnonzero(flat.any(axis=(0, 2)))
        if columns.size:
            used = max(used, int(columns[-1]) + 1)
    length = max(used, 1) if any(a.shape[1] for _, a in present) else 0
    mask = inputs.get(spec.mask) if spec.mask else None
    if mask is not None:
        for name, array in present:
            if array.shape[1] > mask.shape[1]:  # tokens the mask says nothing about
                raise InvalidArgumentError(
                    f"input '{name}' has {array.shape[1]} tokens and '{spec.mask}' (its mask) "
                    f"{mask.shape[1]}: expected the mask to cover every token"
                )
    for name, array in present:
        if array.shape[1] < length:
            raise InvalidArgumentError(
                f"input '{name}' has {array.shape[1]} tokens, fewer than the {length} the "
                f"{'mask' if spec.mask else 'other sequence inputs'} mark: expected at least "
                f"{length}"
            )
    return length


def trim(inputs: dict[str, np.ndarray], spec: SequenceSpec, length: int) -> dict[str, np.ndarray]:
    """The request with its sequence inputs cut to ``length`` tokens (views, no copy)."""
    out = dict(inputs)
    for name in spec.inputs:
        array = out.get(name)
        if array is not None and array.shape[1] != length:
            out[name] = array[:, :length]
    return out


def signature(inputs: Mapping[str, np.ndarray], spec: SequenceSpec) -> Hashable:
    """Like ``batch_signature``, without the token axis of the sequence inputs."""
    names = set(spec.inputs)
    return tuple(
        sorted(
            (name, a.dtype, a.shape[2:] if name in names else a.shape[1:])
            for name, a in inputs.items()
        )
    )


def merge_padded(
    requests: Sequence[Mapping[str, np.ndarray]], spec: SequenceSpec
) -> dict[str, np.ndarray]:
    """Concatenate along axis 0, zero-padding the sequence inputs to the longest request."""
    if len(requests) == 1:
        only = requests[0]
        return only if isinstance(only, dict) else dict(only)
    names = set(spec.inputs)
    merged: dict[str, np.ndarray] = {}
    for name, first in requests[0].items():
        parts = [r[name] for r in requests]
        if name not in names:
            merged[name] = np.concatenate(parts, axis=0)
            continue
        width = max(p.shape[1] for p in parts)
        rows = sum(p.shape[0] for p in parts)
        out = np.zeros((rows, width, *first.shape[2:]), dtype=first.dtype)
        start = 0
        for part in parts:
            out[start : start + part.shape[0], : part.shape[1]] = part
            start += part.shape[0]
        merged[name] = out
    return merged


def cut_outputs(
    parts: list[dict[str, np.ndarray]], lengths: Sequence[int], spec: SequenceSpec
) -> list[dict[str, np.ndarray]]:
    """Cut each request's sequence outputs back to its own length (views)."""
    if not spec.outputs:
        return parts
    for part, length in zip(parts, lengths, strict=True):
        for name in spec.outputs:
            array = part.get(name)
            if array is None:
                continue
            if array.ndim < 2 or array.shape[1] < length:
                raise ModelExecutionError(
                    f"output '{name}' is a sequence output but has shape {list(array.shape)}; "
                    f"expected [rows, >= {length} tokens, ...]"
                )
            part[name] = array[:, :length]
    return parts


def choose_by_length(
    candidates: Sequence[tuple[int, int]], max_rows: int, max_tokens: int
) -> list[int]:
    """Indices into ``candidates`` ((rows, length) per queued request, oldest first) of the
    next batch: always the oldest, then, one at a time, the neighbour in length order whose
    admission adds the least padding, while rows <= ``max_rows`` and rows x longest <=
    ``max_tokens`` (a request too long for the budget alone still runs, alone)."""
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i][1], i))
    at = order.index(0)
    lo = hi = at
    rows, longest = candidates[0]
    chosen = [0]
    while True:
        best: tuple[int, int, int] | None = None  # (added padding, side, index)
        if lo > 0:
            i = order[lo - 1]
            r, n = candidates[i]
            if rows + r <= max_rows and (rows + r) * longest <= max_tokens:
                best = (r * (longest - n), -1, i)
        if hi < len(order) - 1:
            i = order[hi + 1]
            r, n = candidates[i]
            if rows + r <= max_rows and (rows + r) * max(longest, n) <= max_tokens:
                added = rows * (max(longest, n) - longest)
                if best is None or added < best[0]:
                    best = (added, 1, i)
        if best is None:
            return sorted(chosen)
        _, side, i = best
        if side < 0:
            lo -= 1
        else:
            hi += 1
        rows += candidates[i][0]
        longest = max(longest, candidates[i][1])
        chosen.append(i)


def plan_chunks(candidates: Sequence[tuple[int, int]], overhead_tokens: int) -> list[list[int]]:
    """Split one batch ((rows, length) per request) into backend calls of similar length.

    Requests are sorted by length and cut into contiguous runs minimizing the total cost, where
    a call costs ``overhead_tokens`` plus its rows x its longest length (dynamic programming over
    the sorted order, O(n^2) for n requests). Returns the requests' indices per call, shortest
    call first; ``overhead_tokens`` 0 (or one request) gives the whole batch as one call."""
    n = len(candidates)
    if overhead_tokens <= 0 or n < 2:
        return [list(range(n))]
    order = sorted(range(n), key=lambda i: (candidates[i][1], i))
    rows = [candidates[i][0] for i in order]
    lengths = [candidates[i][1] for i in order]
    best = [0] * (n + 1)  # best[j]: the cheapest plan for the first j sorted requests
    cut = [0] * (n + 1)  # where the last call of that plan starts
    for j in range(1, n + 1):
        longest, taken, cheapest, start = lengths[j - 1], 0, math.inf, 0
        for i in range(j - 1, -1, -1):  # the last call holds sorted requests i..j-1
            taken += rows[i]
            cost = best[i] + overhead_tokens + taken * longest
            if cost < cheapest:
                cheapest, start = cost, i
        best[j], cut[j] = int(cheapest), start
    chunks: list[list[int]] = []
    j = n
    while j:
        chunks.append(order[cut[j] : j])
        j = cut[j]
    return chunks[::-1]
