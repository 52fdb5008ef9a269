"""Triton's ``sequence_batching`` block as validated, frozen values, and the control tensors it
asks for: pure functions, tested without asyncio.

A stateful model sees each request of a sequence with control inputs the server fills in
(``control_input``): START (first request), END (last), READY (the batch row holds a request)
as the config's false/true values, and CORRID (the sequence's correlation id, numeric or
string). Implicit state (``state``): the server keeps each sequence's state tensor between
requests, giving the backend the last ``output_name`` as the next ``input_name``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from accelserve.errors import ConfigError, InvalidArgumentError, ModelExecutionError
from accelserve.types import CONFIG_TO_V2, numpy_dtype

START, READY, END, CORRID = (
    "CONTROL_SEQUENCE_START",
    "CONTROL_SEQUENCE_READY",
    "CONTROL_SEQUENCE_END",
    "CONTROL_SEQUENCE_CORRID",
)
STRATEGIES = ("direct", "oldest")
# Triton's default when the config leaves max_sequence_idle_microseconds at 0.
DEFAULT_IDLE_US = 1_000_000
_CORRID_TYPES = ("TYPE_UINT64", "TYPE_INT64", "TYPE_UINT32", "TYPE_INT32", "TYPE_STRING")
_FLAG_FIELDS = ("int32_false_true", "fp32_false_true", "bool_false_true")
_FLAG_DTYPES = {
    "int32_false_true": np.dtype(np.int32),
    "fp32_false_true": np.dtype(np.float32),
    "bool_false_true": np.dtype(np.bool_),
}

SequenceId = int | str


@dataclass(frozen=True, slots=True)
class Control:
    """One control input: ``kind`` is START, READY, END or CORRID."""

    input: str
    kind: str
    dtype: np.dtype
    false_true: tuple[Any, Any] = (0, 1)  # unused for CORRID


@dataclass(frozen=True, slots=True)
class StateSpec:
    """One implicit state: ``output`` after a request is ``input`` of the next."""

    input: str
    output: str
    dtype: np.dtype
    dims: tuple[int, ...]  # the initial state's shape (without the batch dim)


@dataclass(frozen=True, slots=True)
class SequencePolicy:
    strategy: str  # "direct" | "oldest"
    max_batch_size: int  # 0: one request per call, tensors without batch dim
    idle_us: int = DEFAULT_IDLE_US
    controls: tuple[Control, ...] = ()
    states: tuple[StateSpec, ...] = ()
    max_candidate_sequences: int = 0  # oldest: sequences per instance (0: unbounded)
    # How long a batch may wait for more rows (see sequence_slots.may_grow).
    max_queue_delay_us: int = 0
    preferred_batch_sizes: frozenset[int] = frozenset()  # oldest
    minimum_slot_utilization: float = 0.0  # direct

    @property
    def slots_per_instance(self) -> int:
        """Sequences one instance holds at once; more wait in a backlog (0: unbounded)."""
        if self.strategy == "direct":
            return max(1, self.max_batch_size)
        return self.max_candidate_sequences

    @property
    def rows_per_batch(self) -> int:
        return max(1, self.max_batch_size)

    @classmethod
    def from_config(cls, config: Any) -> SequencePolicy:
        """Read and check ``config.sequence_batching`` (a ``ModelConfig`` message)."""
        where = f"model '{config.name}' sequence_batching"
        sb = config.sequence_batching
        if sb.iterative_sequence:
            raise ConfigError(f"{where}.iterative_sequence: not supported; expected false")
        strategy = sb.WhichOneof("strategy_choice") or "direct"
        candidates = 0
        delay_us = int(getattr(sb, strategy).max_queue_delay_microseconds)
        utilization = float(sb.direct.minimum_slot_utilization)
        if not 0.0 <= utilization <= 1.0:
            raise ConfigError(
                f"{where}.direct.minimum_slot_utilization: expected 0..1; received {utilization:g}"
            )
        if strategy == "oldest":
            candidates = int(sb.oldest.max_candidate_sequences)
            if candidates < 0:
                raise ConfigError(
                    f"{where}.oldest.max_candidate_sequences: expected >= 0; received {candidates}"
                )
            for size in sb.oldest.preferred_batch_size:
                if not 1 <= size <= max(1, config.max_batch_size):
                    raise ConfigError(
                        f"{where}.oldest.preferred_batch_size: expected values in "
                        f"1..{max(1, config.max_batch_size)} (max_batch_size); received {size}"
                    )
        declared = {t.name for t in config.input}
        controls = tuple(_control(where, i, ci, declared) for i, ci in enumerate(sb.control_input))
        names = [c.input for c in controls]
        kinds = [c.kind for c in controls]
        for seen in (names, kinds):
            twice = sorted({x for x in seen if seen.count(x) > 1})
            if twice:
                raise ConfigError(f"{where}.control_input: expected each once; {twice[0]} repeats")
        states = tuple(_state(where, i, s, declared | set(names)) for i, s in enumerate(sb.state))
        return cls(
            strategy=strategy,
            max_batch_size=int(config.max_batch_size),
            idle_us=int(sb.max_sequence_idle_microseconds) or DEFAULT_IDLE_US,
            controls=controls,
            states=states,
            max_candidate_sequences=candidates,
            max_queue_delay_us=delay_us,
            preferred_batch_sizes=frozenset(int(n) for n in sb.oldest.preferred_batch_size),
            minimum_slot_utilization=utilization,
        )

    def extra_inputs(self) -> frozenset[str]:
        """Inputs the server fills in (never sent by clients)."""
        return frozenset([c.input for c in self.controls] + [s.input for s in self.states])


def _control(where: str, index: int, message: Any, declared: set[str]) -> Control:
    field = f"{where}.control_input[{index}]"
    name = message.name
    if not name:
        raise ConfigError(f"{field}.name: expected the model input's name; received ''")
    if name in declared:
        raise ConfigError(
            f"{field}: '{name}' is also a declared input; expected the control input to be "
            "left out of 'input' (the server fills it in)"
        )
    if len(message.control) != 1:
        raise ConfigError(
            f"{field} '{name}': expected exactly 1 control; received {len(message.control)}"
        )
    control = message.control[0]
    kind = control.Kind.Name(control.kind)
    given = [f for f in _FLAG_FIELDS if len(getattr(control, f))]
    if kind == CORRID:
        type_name = _type_name(control.data_type)
        if given or type_name not in _CORRID_TYPES:
            raise ConfigError(
                f"{field} '{name}' ({CORRID}): expected data_type one of "
                f"{', '.join(_CORRID_TYPES)} and no *_false_true; received data_type "
                f"{type_name}{', ' + given[0] if given else ''}"
            )
        return Control(name, kind, numpy_dtype(CONFIG_TO_V2[type_name]))
    if len(given) != 1 or len(getattr(control, given[0])) != 2:
        shown = {f: list(getattr(control, f)) for f in given}
        raise ConfigError(
            f"{field} '{name}' ({kind}): expected exactly one of {', '.join(_FLAG_FIELDS)} with "
            f"2 values [false, true]; received {shown or 'none'}"
        )
    false, true = getattr(control, given[0])
    return Control(name, kind, _FLAG_DTYPES[given[0]], (false, true))


def _state(where: str, index: int, message: Any, taken: set[str]) -> StateSpec:
    field = f"{where}.state[{index}]"
    if not message.input_name or not message.output_name:
        raise ConfigError(
            f"{field}: expected input_name and output_name; received "
            f"{message.input_name!r} and {message.output_name!r}"
        )
    if message.input_name in taken:
        raise ConfigError(
            f"{field}.input_name: '{message.input_name}' is also a declared or control input; "
            "expected a name of its own"
        )
    type_name = _type_name(message.data_type)
    if type_name not in CONFIG_TO_V2 or type_name == "TYPE_STRING":
        raise ConfigError(
            f"{field}.data_type: expected a numeric or boolean type; received {type_name}"
        )
    dims = tuple(int(d) for d in message.dims)
    if not dims:
        raise ConfigError(f"{field}.dims: expected at least one dimension; received []")
    if len(message.initial_state) > 1:
        raise ConfigError(
            f"{field}.initial_state: expected at most 1; received {len(message.initial_state)}"
        )
    if message.initial_state:
        initial = message.initial_state[0]
        if initial.WhichOneof("state_data") == "data_file":
            raise ConfigError(
                f"{field}.initial_state.data_file: not supported; expected zero_data: true"
            )
        if initial.dims:
            dims = tuple(int(d) for d in initial.dims)
    if any(d < 0 for d in dims):
        raise ConfigError(
            f"{field}: the initial state needs a fixed shape; expected initial_state.dims "
            f"without -1 (dims are {list(dims)})"
        )
    return StateSpec(
        message.input_name, message.output_name, numpy_dtype(CONFIG_TO_V2[type_name]), dims
    )


def _type_name(value: int) -> str:
    from accelserve.protocol.model_config_pb2 import DataType

    return str(DataType.Name(value))


# -- per request ------------------------------------------------------------------------------


def control_tensors(
    controls: Sequence[Control],
    *,
    start: bool,
    end: bool,
    ready: bool,
    sequence_id: SequenceId,
    batched: bool,
    model: str,
) -> dict[str, np.ndarray]:
    """The control inputs of one batch row: shape [1, 1] when the model batches, else [1]."""
    shape = (1, 1) if batched else (1,)
    flags = {START: start, END: end, READY: ready}
    out: dict[str, np.ndarray] = {}
    for control in controls:
        if control.kind == CORRID:
            value: Any = corrid_value(control, sequence_id, model)
        else:
            value = control.false_true[1 if flags[control.kind] else 0]
        out[control.input] = np.full(shape, value, dtype=control.dtype)
    return out


def corrid_value(control: Control, sequence_id: SequenceId, model: str) -> Any:
    """The CORRID value of ``sequence_id`` in the control's data type (400 when it cannot be)."""
    if control.dtype == np.dtype(object):
        return str(sequence_id).encode() if sequence_id != 0 else b""
    if isinstance(sequence_id, str):
        raise InvalidArgumentError(
            f"sequence_id: model '{model}' takes numeric correlation ids ({control.input} is "
            f"{control.dtype}); received the string {sequence_id!r}"
        )
    info = np.iinfo(control.dtype)
    if not info.min <= sequence_id <= info.max:
        raise InvalidArgumentError(
            f"sequence_id: model '{model}' takes correlation ids in {info.min}..{info.max} "
            f"({control.input} is {control.dtype}); received {sequence_id}"
        )
    return sequence_id


def initial_states(states: Sequence[StateSpec], batched: bool) -> dict[str, np.ndarray]:
    """Each state input's initial (zero) value for one batch row."""
    lead = (1,) if batched else ()
    return {s.input: np.zeros(lead + s.dims, dtype=s.dtype) for s in states}


def filler_row(
    policy: SequencePolicy, template: dict[str, np.ndarray], model: str
) -> dict[str, np.ndarray]:
    """A direct batch row without a request: empty data shaped like ``template`` (a real row
    of the batch), READY false, the initial state."""
    row = {
        name: np.full_like(a, b"") if a.dtype == object else np.zeros_like(a)
        for name, a in template.items()
    }
    flags = {"start": False, "end": False, "ready": False}
    row.update(control_tensors(policy.controls, **flags, sequence_id=0, batched=True, model=model))
    row.update(initial_states(policy.states, True))
    return row


def take_states(
    states: Sequence[StateSpec], outputs: dict[str, np.ndarray], model: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Split a request's outputs into what the client gets and its sequence's next state
    (each state output becomes the state input of the next request)."""
    if not states:
        return outputs, {}
    outputs = dict(outputs)
    state: dict[str, np.ndarray] = {}
    for spec in states:
        value = outputs.pop(spec.output, None)
        if value is None:
            raise ModelExecutionError(
                f"model '{model}': the backend returned no '{spec.output}' (the state "
                f"output_name of '{spec.input}'); it returned {sorted(outputs)}"
            )
        state[spec.input] = np.ascontiguousarray(value, dtype=spec.dtype)
    return outputs, state


def refusal(sid: SequenceId, gone: str | None, model: str, idle_us: int) -> str:
    """Why a request without ``sequence_start`` for an inactive sequence is refused; ``gone``
    says how the sequence last ended ("ended", "expired" or None: never seen)."""
    if gone == "expired":
        return (
            f"sequence {sid!r} of model '{model}' expired: it had no request for {idle_us} us "
            "(max_sequence_idle_microseconds); expected sequence_start to begin it again"
        )
    if gone == "ended":
        return (
            f"sequence {sid!r} of model '{model}' has ended (sequence_end); expected "
            "sequence_start to begin it again"
        )
    return (
        f"inference request for sequence {sid!r} to model '{model}' must specify the START "
        "flag (parameter 'sequence_start') on the first request of the sequence; the sequence "
        "is not active"
    )


def sequence_parameters(parameters: dict[str, object], model: str) -> tuple[SequenceId, bool, bool]:
    """``sequence_id``, ``sequence_start`` and ``sequence_end`` of a request, checked."""
    sid = parameters.get("sequence_id", 0)
    if isinstance(sid, bool) or not isinstance(sid, int | str):
        raise InvalidArgumentError(
            f"parameter 'sequence_id': expected an integer or a string; received "
            f"{type(sid).__name__} {sid!r}"
        )
    if sid == 0 or sid == "":
        raise InvalidArgumentError(
            f"inference request to model '{model}' must specify a non-zero or non-empty "
            f"correlation ID (parameter 'sequence_id'); received {sid!r}"
        )
    if isinstance(sid, int) and not 0 < sid < 2**64:
        raise InvalidArgumentError(
            f"parameter 'sequence_id': expected an unsigned 64-bit integer; received {sid}"
        )
    flags = []
    for key in ("sequence_start", "sequence_end"):
        value = parameters.get(key, False)
        if not isinstance(value, bool):
            raise InvalidArgumentError(
                f"parameter '{key}': expected a boolean; received {type(value).__name__} {value!r}"
            )
        flags.append(value)
    return sid, flags[0], flags[1]
