"""Malformed bodies, generated: the decoder either decodes or raises InvalidArgumentError.

Anything else (TypeError, ValueError, IndexError...) would reach a client as a 500. Each test
counts both outcomes and requires some of each, so a decoder that rejected everything (or
accepted everything) would fail it.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import orjson
from v2_codec_helpers import binary_body, json_body, sample, tensor_json

from accelserve.codecs.v2_http_decode import decode_infer_request
from accelserve.errors import InvalidArgumentError

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1.5,
    2**63,
    2**64 - 1,
    -(2**63) - 1,
    "",
    "x",
    "INT32",
    [],
    [[]],
    {},
    {"binary_data_size": 4},
    [1, [2]],
    ["a"],
    [None],
    [-5],
    [2**40],
    1e300,
]


class Outcomes:
    """Feeds generated bodies to the decoder and counts what it did with them."""

    def __init__(self) -> None:
        self.accepted = 0
        self.rejected = 0

    def decodes_or_rejects(self, body: bytes, header_length: int | None) -> None:
        try:
            decode_infer_request(body, header_length, max_elements=10**6)
        except InvalidArgumentError as exc:  # any other exception fails the test
            assert str(exc) and "Traceback" not in str(exc)
            self.rejected += 1
        else:
            self.accepted += 1

    def assert_both_seen(self) -> None:
        assert self.accepted > 0, f"no generated body decoded ({self.rejected} rejected)"
        assert self.rejected > 0, f"no generated body was rejected ({self.accepted} decoded)"


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node[:4]):
            found += paths(value, (*prefix, index))
    return found


def replace(document: Any, path: tuple, value: Any) -> Any:
    document = copy.deepcopy(document)
    if not path:
        return value
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


def test_every_field_replaced_by_odd_values() -> None:
    outcomes = Outcomes()
    bodies = [
        binary_body(
            [("a", "INT32", sample("INT32", (1, 4))), ("s", "BYTES", sample("BYTES", (2,)))],
            outputs=[{"name": "o", "parameters": {"binary_data": True}}],
            parameters={"binary_data_output": False},
        ),
        (
            json_body(
                [
                    tensor_json("b", "BOOL", sample("BOOL", (2, 2))),
                    tensor_json("f", "FP16", sample("FP16", (3,))),
                ],
                id="r",
            ),
            None,
        ),
    ]
    for body, header_length in bodies:
        end = len(body) if header_length is None else header_length
        document, tail = orjson.loads(body[:end]), body[end:]
        for path in paths(document):
            for value in ODD_VALUES:
                header = json.dumps(replace(document, path, value)).encode()
                length = None if header_length is None else len(header)
                outcomes.decodes_or_rejects(header + tail, length)
    outcomes.assert_both_seen()


def test_random_byte_damage() -> None:
    outcomes = Outcomes()
    rng = random.Random(1234)
    body, header_length = binary_body(
        [("a", "FP32", sample("FP32", (2, 3))), ("s", "BYTES", sample("BYTES", (3,)))]
    )
    for _ in range(3000):
        damaged = bytearray(body)
        for _ in range(rng.randint(1, 3)):
            position = rng.randrange(len(damaged))
            action = rng.random()
            if action < 0.5:
                damaged[position] = rng.randrange(256)
            elif action < 0.75:
                del damaged[position]
            else:
                damaged.insert(position, rng.randrange(256))
        length = rng.choice([header_length, None, rng.randrange(len(damaged) + 8)])
        outcomes.decodes_or_rejects(bytes(damaged), length)
    outcomes.assert_both_seen()
