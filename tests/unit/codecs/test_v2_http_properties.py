"""Property-based tests (hypothesis) of the V2 HTTP request codec, binary extension included.

Whatever the bytes, ``decode_request`` (the server's entry point: the header cache over
``decode_infer_request``) either decodes or raises one of the project's errors; any other
exception would reach a client as a 500. Inputs: random bytes with and without an
``Inference-Header-Content-Length``, and random mutations (bytes flipped, cut, inserted,
header length moved, JSON values replaced) of valid binary requests, which must first decode to
the tensors they were built from. Example counts come from the hypothesis profile in
``tests/conftest.py`` (200 by default; ``ACCELSERVE_HYPOTHESIS_PROFILE=long`` for more).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
from hypothesis import given
from hypothesis import strategies as st
from v2_codec_helpers import DATATYPES, NUMPY, assert_same, binary_body, sample

from accelserve.codecs.v2 import DEFAULT_MAX_ELEMENTS
from accelserve.codecs.v2_http_cache import decode_request
from accelserve.codecs.v2_http_decode import decode_infer_request
from accelserve.errors import AccelServeError


def outcome(decode: Any, body: bytes, header_length: int | None) -> bool:
    """True when ``decode`` decoded the body, False when it rejected it with a project error;
    any other exception propagates and fails the test."""
    try:
        decode(body, header_length)
    except AccelServeError as exc:
        assert exc.message and "Traceback" not in exc.message
        return False
    return True


def decodes_or_rejects(body: bytes, header_length: int | None) -> bool:
    """Decode with the plain decoder and through the server's header cache: both must agree."""
    plain = outcome(decode_infer_request, body, header_length)
    assert outcome(decode_request, body, header_length) == plain, "the cache disagrees"
    return plain


# ----------------------------------------------------------------------------- random bytes


@given(st.binary(max_size=512))
def test_random_bytes_as_json_body(body: bytes) -> None:
    decodes_or_rejects(body, None)


@given(st.binary(max_size=512), st.integers(min_value=0, max_value=600))
def test_random_bytes_with_a_header_length(body: bytes, header_length: int) -> None:
    decodes_or_rejects(body, header_length)


@given(st.binary(max_size=256), st.binary(max_size=256))
def test_random_tensor_bytes_after_a_valid_header(json_tail: bytes, tensor_bytes: bytes) -> None:
    # A well-formed JSON header that claims binary inputs, followed by arbitrary bytes.
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "A", "datatype": "BYTES", "shape": [2], "parameters": {}},
                {"name": "B", "datatype": "INT32", "shape": [1, 2], "parameters": {}},
            ]
        }
    )
    spec = orjson.loads(header)
    spec["inputs"][0]["parameters"]["binary_data_size"] = len(tensor_bytes)
    spec["inputs"][1]["parameters"]["binary_data_size"] = len(json_tail)
    header = orjson.dumps(spec)
    decodes_or_rejects(header + tensor_bytes + json_tail, len(header))


# ------------------------------------------------------------------- valid requests, mutated


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, int, dict[str, np.ndarray]]:
    """A valid binary request of 1 to 3 inputs of any datatype, with the tensors it carries."""
    count = draw(st.integers(min_value=1, max_value=3))
    tensors = []
    for index in range(count):
        datatype = draw(st.sampled_from(DATATYPES))
        shape = tuple(draw(st.lists(st.integers(0, 3), min_size=0, max_size=3)))
        seed = draw(st.integers(0, 2**16))
        tensors.append((f"in{index}", datatype, sample(datatype, shape, seed)))
    fields: dict[str, Any] = {}
    if draw(st.booleans()):
        fields["parameters"] = {"binary_data_output": draw(st.booleans())}
    if draw(st.booleans()):
        fields["outputs"] = [{"name": "out", "parameters": {"binary_data": True}}]
    body, header_length = binary_body(tensors, **fields)
    return body, header_length, {name: array for name, _, array in tensors}


@given(valid_requests())
def test_valid_binary_requests_decode_to_their_tensors(
    request: tuple[bytes, int, dict[str, np.ndarray]],
) -> None:
    body, header_length, tensors = request
    for _ in range(2):  # the second time through the header cache
        decoded = decode_request(body, header_length)
        assert list(decoded.inputs) == list(tensors)
        for name, expected in tensors.items():
            assert_same(np.asarray(decoded.inputs[name]), expected)


Mutation = tuple[str, int, int, bytes]

MUTATIONS = st.tuples(
    st.sampled_from(["flip", "cut", "insert", "replace", "header_length"]),
    st.integers(min_value=0, max_value=10**6),  # position (modulo the body's length)
    st.integers(min_value=-8, max_value=8),  # an amount, for flips and header lengths
    st.binary(min_size=1, max_size=8),
)


def mutate(body: bytes, header_length: int, mutation: Mutation) -> tuple[bytes, int]:
    kind, position, amount, data = mutation
    at = position % (len(body) + 1)
    if kind == "flip" and body:
        at %= len(body)
        body = body[:at] + bytes([(body[at] + amount) % 256]) + body[at + 1 :]
    elif kind == "cut":
        body = body[:at] + body[at + len(data) :]
    elif kind == "insert":
        body = body[:at] + data + body[at:]
    elif kind == "replace":
        body = body[:at] + data + body[at + len(data) :]
    elif kind == "header_length":
        header_length = max(0, header_length + amount)
    return body, header_length


@given(valid_requests(), st.lists(MUTATIONS, min_size=1, max_size=4))
def test_mutated_binary_requests_decode_or_get_a_project_error(
    request: tuple[bytes, int, dict[str, np.ndarray]], mutations: list[Mutation]
) -> None:
    body, header_length, _ = request
    for mutation in mutations:
        body, header_length = mutate(body, header_length, mutation)
    decodes_or_rejects(body, header_length)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(DATATYPES),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["name", "datatype", "shape", "data", "parameters", "binary_data_size"])
            | st.text(max_size=4),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) to a value inside a JSON document, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, (*prefix, index))
    return found


@given(valid_requests(), st.data())
def test_json_header_with_a_value_replaced_decodes_or_gets_a_project_error(
    request: tuple[bytes, int, dict[str, np.ndarray]], data: st.DataObject
) -> None:
    body, header_length, _ = request
    document = orjson.loads(body[:header_length])
    path = data.draw(st.sampled_from(paths_of(document)[1:]))
    replacement = data.draw(JSON_VALUES)
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    header = json.dumps(document).encode()  # orjson renders no integer beyond 64 bits
    decodes_or_rejects(header + body[header_length:], len(header))


@given(
    st.sampled_from([d for d in DATATYPES if d not in ("BOOL", "BYTES")]),
    st.lists(st.integers(min_value=0, max_value=2**40), min_size=0, max_size=6),
    st.integers(min_value=0, max_value=64),
)
def test_binary_data_is_accepted_exactly_when_its_size_fits_the_shape(
    datatype: str, shape: list[int], nbytes: int
) -> None:
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": datatype,
                    "shape": shape,
                    "parameters": {"binary_data_size": nbytes},
                }
            ]
        }
    )
    count = math.prod(shape)
    extent = count or math.prod(d for d in shape if d)  # a zero-size tensor's other dims
    fits = nbytes == count * np.dtype(NUMPY[datatype]).itemsize and extent <= DEFAULT_MAX_ELEMENTS
    assert decodes_or_rejects(header + bytes(range(nbytes)), len(header)) == fits
