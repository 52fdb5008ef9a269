"""Which instance slot a sequence holds, and which sequences form the next batch: pure
functions and one plain class, tested without asyncio.

Every sequence is bound, from its first request to its last, to one instance (Triton's
``direct`` and ``oldest`` strategies alike); under ``direct`` it also keeps one batch row (its
slot index) for its whole life. An instance holds ``per_instance`` sequences at once (0:
unbounded); a sequence started when every slot is taken waits in a backlog, in arrival order,
and takes the first slot that frees.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Slot:
    instance: int
    index: int  # the batch row under "direct"; an instance-local number under "oldest"


class SlotTable(Generic[K]):
    """Slots of ``instances`` instances with ``per_instance`` slots each (0: unbounded)."""

    def __init__(self, instances: int, per_instance: int) -> None:
        if instances < 1 or per_instance < 0:
            raise ValueError(f"instances {instances} >= 1 and per_instance {per_instance} >= 0")
        self.per_instance = per_instance
        self._held: list[dict[int, K]] = [{} for _ in range(instances)]
        self._slot: dict[K, Slot] = {}
        self._backlog: OrderedDict[K, None] = OrderedDict()

    def slot_of(self, key: K) -> Slot | None:
        return self._slot.get(key)

    @property
    def backlog(self) -> list[K]:
        return list(self._backlog)

    def holders(self, instance: int) -> dict[int, K]:
        """Slot index -> the sequence holding it, on ``instance``."""
        return self._held[instance]

    def bind(self, key: K) -> Slot | None:
        """Give ``key`` the lowest free slot of the least-loaded instance (lowest instance
        first on ties), or put it in the backlog (None) when every slot is taken."""
        if key in self._slot or key in self._backlog:
            raise KeyError(f"{key!r} holds a slot or waits for one already")
        slot = self._free_slot()
        if slot is None:
            self._backlog[key] = None
            return None
        self._take(key, slot)
        return slot

    def release(self, key: K) -> tuple[K, Slot] | None:
        """Free ``key``'s slot (or its backlog place). Returns the backlogged sequence that now
        holds the freed slot, if any."""
        if key in self._backlog:  # it held no slot yet
            del self._backlog[key]
            return None
        slot = self._slot.pop(key, None)
        if slot is None:
            return None
        del self._held[slot.instance][slot.index]
        if not self._backlog:
            return None
        waiting, _ = self._backlog.popitem(last=False)
        # Unbounded slots never backlog, so the freed slot is the right one to hand on.
        self._take(waiting, slot)
        return waiting, slot

    def _free_slot(self) -> Slot | None:
        loads = [len(held) for held in self._held]
        instance = loads.index(min(loads))
        held = self._held[instance]
        if self.per_instance and len(held) >= self.per_instance:
            return None
        index = next(i for i in range(len(held) + 1) if i not in held)
        return Slot(instance, index)

    def _take(self, key: K, slot: Slot) -> None:
        self._slot[key] = slot
        self._held[slot.instance][slot.index] = key


def direct_rows(ready: Sequence[int]) -> list[int | None]:
    """Batch rows under ``direct``: row i is slot i, from 0 to the highest ready slot; a slot
    without a ready request is a filler row (None) that the model sees with READY false."""
    if not ready:
        return []
    present = set(ready)
    return [i if i in present else None for i in range(max(present) + 1)]


def oldest_pick(arrivals: Sequence[float], cap: int) -> list[int]:
    """Under ``oldest``: indices of the ``cap`` candidates (each one sequence's next request,
    by arrival time) that arrived first, in arrival order."""
    order = sorted(range(len(arrivals)), key=lambda i: (arrivals[i], i))
    return order[: max(1, cap)]


def may_grow(
    ready: int,
    held: int,
    cap: int,
    *,
    direct: bool,
    slots: int = 0,
    min_utilization: float = 0.0,
    preferred: frozenset[int] = frozenset(),
) -> bool:
    """Whether a batch of ``ready`` rows is worth holding back (up to the queue delay) for
    more: the instance holds ``held`` sequences, so more rows may come. Under ``direct`` it runs
    once ``min_utilization`` of the ``slots`` are ready (any row when 0, Triton's default);
    under ``oldest`` once it has ``cap`` rows, every sequence's, or a preferred size."""
    if ready >= min(cap, held):
        return False
    if direct:
        return ready < math.ceil(min_utilization * slots)
    return ready not in preferred
