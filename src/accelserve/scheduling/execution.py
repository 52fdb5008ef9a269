"""Running one batch on an instance's thread, and describing its failure to clients."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from accelserve.errors import (
    AccelServeError,
    InvalidArgumentError,
    ModelExecutionError,
    ModelInputError,
)
from accelserve.scheduling.batching import Tensors, merge_inputs, split_outputs
from accelserve.scheduling.sequences import (
    SequenceSpec,
    cut_outputs,
    merge_padded,
    plan_chunks,
)

logger = logging.getLogger(__name__)

_NS = time.perf_counter_ns
# An absolute path ("/a/b/c", "C:\\a\\b"): cut down to its last component in client messages.
_SEG = r"[^\s'\"<>|:;,()\[\]{}\\/]+"
_ABS_PATH = re.compile(rf"(?<![\w.\\/])(?:[A-Za-z]:)?[\\/](?:{_SEG}[\\/])+({_SEG})?")


def execute_batch(
    infer: Callable[[Tensors], Tensors],
    inputs: list[Tensors],
    rows: list[int],
    split: bool,
    sequence: SequenceSpec | None = None,
    lengths: list[int] | None = None,
) -> tuple[list[Tensors], int, int, int, int]:
    """Merge, run and split one batch on the instance's thread.

    Returns the per-request outputs, the start time (``perf_counter_ns``, when the requests
    left the queue) and the merge, infer and split durations in ns.

    ``split`` is False for models without a batch dimension: one request, outputs as they are.
    With ``sequence``, requests are padded to the longest and their sequence outputs cut back
    to ``lengths``.
    """
    if sequence is not None and lengths is not None and sequence.chunk_overhead_tokens:
        chunks = plan_chunks(list(zip(rows, lengths, strict=True)), sequence.chunk_overhead_tokens)
        if len(chunks) > 1:
            return _execute_chunks(infer, inputs, rows, sequence, lengths, chunks)
    t0 = _NS()
    merged = merge_inputs(inputs) if sequence is None else merge_padded(inputs, sequence)
    t1 = _NS()
    outputs = infer(merged)
    t2 = _NS()
    if split:
        parts = split_outputs(outputs, rows)
        if sequence is not None and lengths is not None:
            parts = cut_outputs(parts, lengths, sequence)
    elif isinstance(outputs, dict):
        parts = [outputs]
    else:
        raise ModelExecutionError(
            f"the backend returned {type(outputs).__name__}; expected a dict of arrays"
        )
    t3 = _NS()
    return parts, t0, t1 - t0, t2 - t1, t3 - t2


def _execute_chunks(
    infer: Callable[[Tensors], Tensors],
    inputs: list[Tensors],
    rows: list[int],
    sequence: SequenceSpec,
    lengths: list[int],
    chunks: list[list[int]],
) -> tuple[list[Tensors], int, int, int, int]:
    """One batch as several backend calls on requests of similar length (``plan_chunks``);
    the durations are summed over the calls."""
    start = _NS()
    parts: list[Tensors] = [{} for _ in inputs]
    merge_ns = infer_ns = split_ns = 0
    for chunk in chunks:
        t0 = _NS()
        merged = merge_padded([inputs[i] for i in chunk], sequence)
        t1 = _NS()
        outputs = infer(merged)
        t2 = _NS()
        pieces = split_outputs(outputs, [rows[i] for i in chunk])
        pieces = cut_outputs(pieces, [lengths[i] for i in chunk], sequence)
        for i, piece in zip(chunk, pieces, strict=True):
            parts[i] = piece
        t3 = _NS()
        merge_ns, infer_ns, split_ns = merge_ns + t1 - t0, infer_ns + t2 - t1, split_ns + t3 - t2
    return parts, start, merge_ns, infer_ns, split_ns


def client_safe(exc: BaseException) -> str:
    """What went wrong, without absolute file paths or a traceback."""
    if isinstance(exc, AccelServeError):
        return exc.message  # written for clients already
    text = _ABS_PATH.sub(lambda m: m.group(1) or "", str(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def failure_message(model_name: str, rows: int, exc: BaseException) -> str:
    """The client-facing text for a batch that failed; unexpected errors are logged in full."""
    if not isinstance(exc, AccelServeError):
        logger.error("model '%s': batch of size %d failed", model_name, rows, exc_info=exc)
    return f"model '{model_name}' failed to execute a batch of size {rows}: {client_safe(exc)}"


def batch_error(model_name: str, exc: BaseException, rows: int, requests: int) -> AccelServeError:
    """What the requests of a failed batch are told: a request that failed alone on its own
    data is the client's fault (400); anything else is the server's (500)."""
    if requests == 1 and isinstance(exc, InvalidArgumentError):
        named = exc.message.startswith(f"model '{model_name}'")
        return ModelInputError(exc.message if named else f"model '{model_name}': {exc.message}")
    return ModelExecutionError(failure_message(model_name, rows, exc))
