"""Which queued requests form the next batch (dynamic batching), as functions of the queue.

From the highest-priority oldest request, with requests of the same signature
(``batching.batch_signature``), up to ``cap`` rows (the largest preferred batch size, else
max_batch_size, as in Triton). The scheduler then decides whether to run it now or wait for
the queue delay (``Scheduler._take_batch``). No asyncio here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Set

from accelserve.scheduling.queues import Item
from accelserve.scheduling.sequences import choose_by_length

# Token-aware batching looks this far into the queue for requests of similar length.
MAX_CANDIDATES = 1024


def gather(
    queued: Iterable[Item], cap: int, preferred: Set[int], one: bool
) -> tuple[list[Item], int, bool]:
    """The oldest request and the following compatible ones that fit ``cap`` rows (just one
    when ``one``). Returns them, how many of them make the largest preferred batch size (0:
    none), and whether the batch is full (cap reached, or the next compatible one does not fit).
    """
    chosen: list[Item] = []
    rows = best = 0
    sig: Hashable = None
    for item in queued:
        if not chosen:
            sig = item.sig
        elif item.sig != sig:
            continue
        elif rows + item.rows > cap:
            return chosen, best, True
        chosen.append(item)
        rows += item.rows
        if rows in preferred:
            best = len(chosen)
        if rows >= cap or one:
            return chosen, best, True
    return chosen, best, False


def gather_by_length(queued: Iterable[Item], cap: int, max_tokens: int) -> tuple[list[Item], bool]:
    """Token-aware batch: the oldest request, then queued requests of similar length, up to
    ``cap`` rows and ``max_tokens`` padded tokens (``sequences.choose_by_length``). Returns them
    and whether the batch is full (it left a compatible request out, or reached ``cap``)."""
    candidates: list[Item] = []
    sig: Hashable = None
    for item in queued:
        if not candidates:
            sig = item.sig
        elif item.sig != sig:
            continue
        if len(candidates) < MAX_CANDIDATES:
            candidates.append(item)
    if not candidates:
        return [], False
    picked = choose_by_length([(item.rows, item.length) for item in candidates], cap, max_tokens)
    chosen = [candidates[i] for i in picked]
    full = len(chosen) < len(candidates) or sum(item.rows for item in chosen) >= cap
    return chosen, full
