"""Sequence batching, pure parts: slot assignment, batch rows, control values, config checks."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.config import parse_config
from accelserve.errors import ConfigError, InvalidArgumentError
from accelserve.scheduling.sequence_config import (
    DEFAULT_IDLE_US,
    SequencePolicy,
    control_tensors,
    initial_states,
    sequence_parameters,
)
from accelserve.scheduling.sequence_slots import (
    Slot,
    SlotTable,
    direct_rows,
    may_grow,
    oldest_pick,
)

CONTROLS = """
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY fp32_false_true: [ -1, 2.5 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END bool_false_true: [ false, true ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
"""


def policy(body: str, max_batch_size: int = 4, inputs: str = "") -> SequencePolicy:
    text = f'name: "acc" max_batch_size: {max_batch_size} {inputs} sequence_batching {{ {body} }}'
    return SequencePolicy.from_config(parse_config(text))


def test_slots_spread_over_instances_then_backlog_in_order() -> None:
    table: SlotTable[str] = SlotTable(instances=2, per_instance=2)
    assert [table.bind(k) for k in "abcd"] == [Slot(0, 0), Slot(1, 0), Slot(0, 1), Slot(1, 1)]
    assert table.bind("e") is None and table.bind("f") is None
    assert table.backlog == ["e", "f"]
    assert table.release("c") == ("e", Slot(0, 1))  # the oldest waiting takes the freed slot
    assert table.holders(0) == {0: "a", 1: "e"}
    assert table.release("f") is None and table.backlog == []  # left the backlog, freed nothing
    assert table.release("a") is None
    assert table.bind("g") == Slot(0, 0)  # lowest free index of the least-loaded instance
    with pytest.raises(KeyError):
        table.bind("g")


def test_unbounded_slots_never_backlog() -> None:
    table: SlotTable[int] = SlotTable(instances=1, per_instance=0)
    assert [table.bind(i) for i in range(5)] == [Slot(0, i) for i in range(5)]
    assert table.backlog == []


def test_direct_rows_fill_gaps_and_oldest_pick_by_arrival() -> None:
    assert direct_rows([]) == []
    assert direct_rows([2, 0]) == [0, None, 2]
    assert oldest_pick([3.0, 1.0, 2.0, 1.0], cap=3) == [1, 3, 2]
    assert oldest_pick([5.0], cap=0) == [0]


def test_control_values_follow_the_config() -> None:
    p = policy(CONTROLS)
    assert p.strategy == "direct" and p.idle_us == DEFAULT_IDLE_US and p.slots_per_instance == 4
    first = control_tensors(
        p.controls, start=True, end=False, ready=True, sequence_id=42, batched=True, model="acc"
    )
    assert first["START"].tolist() == [[1]] and first["START"].dtype == np.int32
    assert first["READY"].tolist() == [[2.5]] and first["READY"].dtype == np.float32
    assert first["END"].tolist() == [[False]] and first["END"].dtype == np.bool_
    assert first["CORRID"].tolist() == [[42]] and first["CORRID"].dtype == np.uint64
    filler = control_tensors(
        p.controls, start=False, end=True, ready=False, sequence_id=0, batched=False, model="acc"
    )
    assert filler["READY"].tolist() == [-1.0] and filler["END"].tolist() == [True]
    with pytest.raises(
        InvalidArgumentError, match=r"numeric correlation ids.*received the string 'x'"
    ):
        control_tensors(
            p.controls,
            start=True,
            end=False,
            ready=True,
            sequence_id="x",
            batched=True,
            model="acc",
        )


def test_string_correlation_ids_and_int32_range() -> None:
    strings = policy(
        'control_input [{ name: "C" control [{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING }] }]'
    )
    out = control_tensors(
        strings.controls,
        start=True,
        end=False,
        ready=True,
        sequence_id="abc",
        batched=True,
        model="m",
    )
    assert out["C"].tolist() == [[b"abc"]] and out["C"].dtype == object
    small = policy(
        'control_input [{ name: "C" control [{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_INT32 }] }]'
    )
    with pytest.raises(
        InvalidArgumentError, match=r"ids in -2147483648\.\.2147483647.*received 4294967296"
    ):
        control_tensors(
            small.controls,
            start=True,
            end=False,
            ready=True,
            sequence_id=2**32,
            batched=True,
            model="m",
        )


def test_state_and_oldest_strategy() -> None:
    p = policy(
        """oldest { max_candidate_sequences: 3 } max_sequence_idle_microseconds: 5000
        state [{ input_name: "S_IN" output_name: "S_OUT" data_type: TYPE_INT32 dims: [ 2 ]
                 initial_state: { zero_data: true name: "zero" data_type: TYPE_INT32 dims: [ 2 ] } }]"""
    )
    assert (p.strategy, p.idle_us, p.slots_per_instance, p.rows_per_batch) == ("oldest", 5000, 3, 4)
    assert p.extra_inputs() == {"S_IN"}
    state = initial_states(p.states, batched=True)
    assert (
        state["S_IN"].shape == (1, 2)
        and state["S_IN"].dtype == np.int32
        and not state["S_IN"].any()
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            'control_input [{ name: "S" }]',
            "control_input[0] 'S': expected exactly 1 control; received 0",
        ),
        (
            'control_input [{ name: "S" control [{ kind: CONTROL_SEQUENCE_START }] }]',
            "expected exactly one of int32_false_true, fp32_false_true, bool_false_true with 2 values",
        ),
        (
            'control_input [{ name: "S" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [1] }] }]',
            "received {'int32_false_true': [1]}",
        ),
        (
            'control_input [{ name: "C" control [{ kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_FP32 }] }]',
            "expected data_type one of TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32, TYPE_STRING",
        ),
        (
            "control_input [{ control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] }]",
            "control_input[0].name: expected the model input's name",
        ),
        (
            """control_input [{ name: "A" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] },
                              { name: "B" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] }]""",
            "expected each once; CONTROL_SEQUENCE_START repeats",
        ),
        (
            'control_input [{ name: "x" control [{ kind: CONTROL_SEQUENCE_START int32_false_true: [0, 1] }] }]',
            "'x' is also a declared input",
        ),
        (
            'state [{ input_name: "S" data_type: TYPE_INT32 dims: [1] }]',
            "expected input_name and output_name",
        ),
        (
            'state [{ input_name: "S" output_name: "T" data_type: TYPE_STRING dims: [1] }]',
            "numeric or boolean",
        ),
        ('state [{ input_name: "S" output_name: "T" data_type: TYPE_INT32 }]', "state[0].dims"),
        (
            'state [{ input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [-1] }]',
            "fixed shape",
        ),
        (
            'state [{ input_name: "S" output_name: "T" data_type: TYPE_INT32 dims: [1] initial_state: { data_file: "f" } }]',
            "initial_state.data_file: not supported",
        ),
        ("iterative_sequence: true", "iterative_sequence: not supported"),
        ("oldest { max_candidate_sequences: -1 }", "max_candidate_sequences: expected >= 0"),
        ("oldest { preferred_batch_size: [ 9 ] }", "expected values in 1..4"),
        ("direct { minimum_slot_utilization: 1.5 }", "minimum_slot_utilization: expected 0..1"),
    ],
)
def test_config_errors_name_the_field(body: str, expected: str) -> None:
    inputs = 'input [{ name: "x" data_type: TYPE_INT32 dims: [1] }]'
    with pytest.raises(ConfigError) as info:
        policy(body, inputs=inputs)
    assert "model 'acc' sequence_batching" in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, "must specify a non-zero or non-empty correlation ID"),
        ({"sequence_id": ""}, "must specify a non-zero or non-empty correlation ID"),
        (
            {"sequence_id": 1.5},
            "parameter 'sequence_id': expected an integer or a string; received float",
        ),
        (
            {"sequence_id": True},
            "parameter 'sequence_id': expected an integer or a string; received bool",
        ),
        ({"sequence_id": -3}, "expected an unsigned 64-bit integer; received -3"),
        (
            {"sequence_id": 3, "sequence_start": "yes"},
            "parameter 'sequence_start': expected a boolean",
        ),
        ({"sequence_id": 3, "sequence_end": 1}, "parameter 'sequence_end': expected a boolean"),
    ],
)
def test_bad_sequence_parameters(parameters: dict[str, object], expected: str) -> None:
    with pytest.raises(
        InvalidArgumentError, match=expected.replace("(", r"\(").replace(")", r"\)")
    ):
        sequence_parameters(parameters, "acc")


def test_sequence_parameters() -> None:
    assert sequence_parameters({"sequence_id": 7, "sequence_start": True}, "m") == (7, True, False)
    assert sequence_parameters({"sequence_id": "s", "sequence_end": True}, "m") == (
        "s",
        False,
        True,
    )


def test_a_batch_may_wait_for_more_rows_only_while_they_can_come() -> None:
    assert may_grow(2, 4, 8, direct=False)  # two more sequences may send
    assert not may_grow(4, 4, 8, direct=False)  # every sequence of the instance is in
    assert not may_grow(8, 20, 8, direct=False)  # full
    assert not may_grow(2, 4, 8, direct=False, preferred=frozenset({2}))
    assert not may_grow(1, 4, 4, direct=True, slots=4)  # Triton's default utilization 0: any
    assert may_grow(1, 4, 4, direct=True, slots=4, min_utilization=0.5)
    assert not may_grow(2, 4, 4, direct=True, slots=4, min_utilization=0.5)


def test_queue_delay_fields() -> None:
    oldest = policy("oldest { max_queue_delay_microseconds: 250 preferred_batch_size: [ 2, 4 ] }")
    assert oldest.max_queue_delay_us == 250 and oldest.preferred_batch_sizes == {2, 4}
    direct = policy("direct { max_queue_delay_microseconds: 9 minimum_slot_utilization: 0.5 }")
    assert (direct.max_queue_delay_us, direct.minimum_slot_utilization) == (9, 0.5)
