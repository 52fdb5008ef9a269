"""Batching and queue policies: Triton's ``dynamic_batching`` block as validated, frozen values.

``BatchingPolicy.from_config`` reads a ``ModelConfig`` message; construction validates every field
and names the config field, the valid range and the value received, so a bad config fails at load
time rather than at the first request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from accelserve.config import count_parameter
from accelserve.errors import ConfigError
from accelserve.scheduling.sequences import SequenceSpec

TIMEOUT_ACTIONS = ("REJECT", "DELAY")


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """Triton's ``ModelQueuePolicy`` for one priority level."""

    timeout_action: str = "REJECT"  # "REJECT" | "DELAY"
    default_timeout_us: int = 0  # 0: requests never time out in the queue
    allow_timeout_override: bool = False
    max_queue_size: int = 0  # 0: unbounded

    def __post_init__(self) -> None:
        if self.timeout_action not in TIMEOUT_ACTIONS:
            raise ConfigError(
                f"queue_policy.timeout_action: expected one of {', '.join(TIMEOUT_ACTIONS)}; "
                f"received {self.timeout_action!r}"
            )
        for name in ("default_timeout_us", "max_queue_size"):
            value = getattr(self, name)
            if value < 0:
                raise ConfigError(f"queue_policy.{name}: expected >= 0; received {value}")

    def timeout_us(self, requested_us: int) -> int:
        """The queue timeout of a request asking for ``requested_us`` (0 = not asked).

        As in Triton, a request may only shorten the default timeout, never lengthen it.
        """
        default = self.default_timeout_us
        if (
            self.allow_timeout_override
            and requested_us > 0
            and (default == 0 or requested_us < default)
        ):
            return requested_us
        return default

    @classmethod
    def from_proto(cls, message: Any) -> QueuePolicy:
        return cls(
            timeout_action=message.TimeoutAction.Name(message.timeout_action),
            default_timeout_us=int(message.default_timeout_microseconds),
            allow_timeout_override=bool(message.allow_timeout_override),
            max_queue_size=int(message.max_queue_size),
        )


@dataclass(frozen=True, slots=True)
class BatchingPolicy:
    """How one model's requests are queued and grouped into backend calls."""

    max_batch_size: int  # 0: the model does not batch (requests run one at a time, whole)
    dynamic: bool = False  # dynamic_batching present in the config
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    preserve_ordering: bool = False
    priority_levels: int = 0  # 0: a single level
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = field(default_factory=QueuePolicy)
    priority_queue_policies: dict[int, QueuePolicy] = field(default_factory=dict)
    # Text models (parameters sequence_inputs, sequence_mask, sequence_outputs,
    # max_batch_tokens): requests of different lengths share padded batches.
    sequence: SequenceSpec | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 0:
            raise ConfigError(f"max_batch_size: expected >= 0; received {self.max_batch_size}")
        self._check_preferred()
        self._check_sequence()
        if self.max_queue_delay_us < 0:
            raise ConfigError(
                "dynamic_batching.max_queue_delay_microseconds: expected >= 0; "
                f"received {self.max_queue_delay_us}"
            )
        self._check_priorities()
        # Normalized: sorted, without duplicates (a set in Triton too).
        object.__setattr__(
            self, "preferred_batch_sizes", tuple(sorted(set(self.preferred_batch_sizes)))
        )

    def _check_preferred(self) -> None:
        sizes = list(self.preferred_batch_sizes)
        if not sizes:
            return
        if not self.dynamic:
            raise ConfigError(
                "dynamic_batching.preferred_batch_size: only valid with dynamic_batching; "
                f"received {sizes}"
            )
        if self.max_batch_size == 0:
            raise ConfigError(
                "dynamic_batching.preferred_batch_size: expected none when max_batch_size is 0 "
                f"(the model does not batch); received {sizes}"
            )
        for size in sizes:
            if not 1 <= size <= self.max_batch_size:
                raise ConfigError(
                    "dynamic_batching.preferred_batch_size: expected values in "
                    f"1..{self.max_batch_size} (max_batch_size); received {size}"
                )

    def _check_sequence(self) -> None:
        seq = self.sequence
        if seq is None:
            return
        if self.max_batch_size == 0:
            raise ConfigError(
                "parameter 'sequence_inputs': expected a batching model (max_batch_size > 0) "
                "to pad requests into batches; max_batch_size is 0"
            )
        if seq.max_tokens and self.preferred_batch_sizes:
            raise ConfigError(
                "parameter 'max_batch_tokens': batches chosen by length cannot also aim at "
                f"dynamic_batching.preferred_batch_size {list(self.preferred_batch_sizes)}; "
                "expected one of the two"
            )

    def _check_priorities(self) -> None:
        levels = self.priority_levels
        if levels < 0:
            raise ConfigError(f"dynamic_batching.priority_levels: expected >= 0; received {levels}")
        keys = sorted(self.priority_queue_policies)
        if levels == 0:
            if self.default_priority_level != 0:
                raise ConfigError(
                    "dynamic_batching.default_priority_level: expected 0 when priority_levels "
                    f"is 0; received {self.default_priority_level}"
                )
            if keys:
                raise ConfigError(
                    "dynamic_batching.priority_queue_policy: expected none when priority_levels "
                    f"is 0; received levels {keys}"
                )
            return
        if not 1 <= self.default_priority_level <= levels:
            raise ConfigError(
                f"dynamic_batching.default_priority_level: expected 1..{levels} (priority_levels "
                f"is {levels}); received {self.default_priority_level}"
            )
        for key in keys:
            if not 1 <= key <= levels:
                raise ConfigError(
                    f"dynamic_batching.priority_queue_policy: expected levels in 1..{levels} "
                    f"(priority_levels is {levels}); received {key}"
                )

    @property
    def levels(self) -> int:
        """Number of queues the scheduler keeps (at least one)."""
        return max(1, self.priority_levels)

    def queue_policy(self, level: int) -> QueuePolicy:
        """The queue policy of priority ``level`` (1-based; level 1 when there are no levels)."""
        return self.priority_queue_policies.get(level, self.default_queue_policy)

    @classmethod
    def from_config(cls, config: Any) -> BatchingPolicy:
        """Read ``max_batch_size`` and ``dynamic_batching`` from a ``ModelConfig`` message."""
        max_batch_size = int(config.max_batch_size)
        sequence = sequence_spec(config)
        if config.WhichOneof("scheduling_choice") != "dynamic_batching":
            return cls(max_batch_size=max_batch_size, sequence=sequence)
        db = config.dynamic_batching
        return cls(
            sequence=sequence,
            max_batch_size=max_batch_size,
            dynamic=True,
            preferred_batch_sizes=tuple(int(s) for s in db.preferred_batch_size),
            max_queue_delay_us=int(db.max_queue_delay_microseconds),
            preserve_ordering=bool(db.preserve_ordering),
            priority_levels=int(db.priority_levels),
            default_priority_level=int(db.default_priority_level),
            default_queue_policy=QueuePolicy.from_proto(db.default_queue_policy),
            priority_queue_policies={
                int(level): QueuePolicy.from_proto(qp)
                for level, qp in db.priority_queue_policy.items()
            },
        )


def sequence_spec(config: Any) -> SequenceSpec | None:
    """The token-aware batching parameters of a ``ModelConfig`` (None when it sets none)."""
    params = {k: v.string_value for k, v in config.parameters.items()}
    names = {key: _names(params.get(key, "")) for key in ("sequence_inputs", "sequence_outputs")}
    mask = params.get("sequence_mask", "").strip()
    if not names["sequence_inputs"]:
        keys = ("sequence_outputs", "sequence_mask", "max_batch_tokens", "chunk_overhead_tokens")
        stray = [k for k in keys if params.get(k)]
        if stray:
            raise ConfigError(
                f"model '{config.name}' parameter '{stray[0]}': needs parameter 'sequence_inputs' "
                "(the inputs whose axis 1 is the token axis)"
            )
        return None
    tokens, overhead = (
        count_parameter(f"model '{config.name}'", key, params.get(key))
        for key in ("max_batch_tokens", "chunk_overhead_tokens")
    )
    for key, declared in (("sequence_inputs", config.input), ("sequence_outputs", config.output)):
        known = [t.name for t in declared]
        for name in names[key]:
            if known and name not in known:
                raise ConfigError(
                    f"model '{config.name}' parameter '{key}': '{name}' is not one of the "
                    f"model's {key.split('_')[1]} ({', '.join(known)})"
                )
    return SequenceSpec(names["sequence_inputs"], mask, names["sequence_outputs"], tokens, overhead)


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())
