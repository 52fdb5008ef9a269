"""BatchingPolicy / QueuePolicy: reading config.pbtxt's fields and rejecting bad values."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from accelserve.errors import ConfigError
from accelserve.protocol import model_config_pb2
from accelserve.scheduling import BatchingPolicy, QueuePolicy


def policy_of(pbtxt: str) -> BatchingPolicy:
    config = text_format.Parse(pbtxt, model_config_pb2.ModelConfig())
    return BatchingPolicy.from_config(config)


def test_without_dynamic_batching() -> None:
    policy = policy_of('name: "m" max_batch_size: 8')
    assert policy == BatchingPolicy(max_batch_size=8)
    assert not policy.dynamic
    assert policy.levels == 1


def test_every_dynamic_batching_field_is_read() -> None:
    policy = policy_of(
        """
        max_batch_size: 16
        dynamic_batching {
          preferred_batch_size: [8, 4, 8]
          max_queue_delay_microseconds: 500
          preserve_ordering: true
          priority_levels: 3
          default_priority_level: 2
          default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 100
                                 allow_timeout_override: true max_queue_size: 7 }
          priority_queue_policy { key: 1 value: { max_queue_size: 2 } }
        }
        """
    )
    assert policy.dynamic
    assert policy.preferred_batch_sizes == (4, 8)
    assert policy.max_queue_delay_us == 500
    assert policy.preserve_ordering
    assert (policy.priority_levels, policy.default_priority_level) == (3, 2)
    assert policy.default_queue_policy == QueuePolicy("DELAY", 100, True, 7)
    assert policy.queue_policy(1) == QueuePolicy("REJECT", 0, False, 2)
    assert policy.queue_policy(3) == policy.default_queue_policy


def test_empty_dynamic_batching_block_enables_it() -> None:
    policy = policy_of("max_batch_size: 4 dynamic_batching { }")
    assert policy.dynamic
    assert policy.max_queue_delay_us == 0
    assert policy.default_queue_policy == QueuePolicy()


@pytest.mark.parametrize(
    ("pbtxt", "field", "expected", "received"),
    [
        ("max_batch_size: -1", "max_batch_size", ">= 0", "-1"),
        (
            "max_batch_size: 4 dynamic_batching { preferred_batch_size: 8 }",
            "dynamic_batching.preferred_batch_size",
            "1..4",
            "8",
        ),
        (
            "max_batch_size: 0 dynamic_batching { preferred_batch_size: 2 }",
            "dynamic_batching.preferred_batch_size",
            "max_batch_size is 0",
            "[2]",
        ),
        (
            "max_batch_size: 4 dynamic_batching { preferred_batch_size: 0 }",
            "dynamic_batching.preferred_batch_size",
            "1..4",
            "0",
        ),
        (
            "max_batch_size: 4 dynamic_batching { priority_levels: 2 }",
            "dynamic_batching.default_priority_level",
            "1..2",
            "0",
        ),
        (
            "max_batch_size: 4 dynamic_batching { priority_levels: 2 default_priority_level: 3 }",
            "dynamic_batching.default_priority_level",
            "1..2",
            "3",
        ),
        (
            "max_batch_size: 4 dynamic_batching { default_priority_level: 1 }",
            "dynamic_batching.default_priority_level",
            "expected 0 when priority_levels is 0",
            "1",
        ),
        (
            "max_batch_size: 4 dynamic_batching { priority_levels: 2 default_priority_level: 1"
            " priority_queue_policy { key: 5 value: {} } }",
            "dynamic_batching.priority_queue_policy",
            "1..2",
            "5",
        ),
    ],
)
def test_invalid_values_name_field_range_and_value(
    pbtxt: str, field: str, expected: str, received: str
) -> None:
    with pytest.raises(ConfigError) as info:
        policy_of(pbtxt)
    message = str(info.value)
    assert message.startswith(field + ":")
    assert expected in message
    assert message.endswith("received " + received)


def test_queue_policy_rejects_unknown_action() -> None:
    with pytest.raises(ConfigError, match=r"timeout_action: expected one of REJECT, DELAY; rec"):
        QueuePolicy(timeout_action="DROP")


def test_request_timeout_may_only_shorten_the_default() -> None:
    fixed = QueuePolicy(default_timeout_us=1000)
    assert fixed.timeout_us(10) == 1000  # no override allowed
    flexible = QueuePolicy(default_timeout_us=1000, allow_timeout_override=True)
    assert flexible.timeout_us(10) == 10
    assert flexible.timeout_us(0) == 1000
    assert flexible.timeout_us(5000) == 1000
    unbounded = QueuePolicy(allow_timeout_override=True)
    assert unbounded.timeout_us(5000) == 5000
    assert unbounded.timeout_us(0) == 0
