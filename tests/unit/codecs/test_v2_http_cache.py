"""The header caches give exactly what the uncached codec gives: same arrays, fields, errors and
response bytes, for repeated requests and for requests that must not be cached."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from v2_codec_helpers import DATATYPES, assert_same, binary_body, sample

from accelserve.codecs import v2_http_cache as cache
from accelserve.codecs.v2 import RequestedOutput
from accelserve.codecs.v2_http_decode import decode_infer_request
from accelserve.codecs.v2_http_encode import encode_infer_response
from accelserve.errors import InvalidArgumentError

OUTPUTS = [{"name": "OUT", "parameters": {"binary_data": True}}]


@pytest.fixture(autouse=True)
def empty_caches() -> Iterator[None]:
    cache._requests.clear()
    cache._responses.clear()
    yield
    cache._requests.clear()
    cache._responses.clear()


def _same_decode(body: bytes, header_length: int) -> None:
    cached = cache.decode_request(body, header_length)
    plain = decode_infer_request(body, header_length)
    assert cached.inputs.keys() == plain.inputs.keys()
    for name, array in plain.inputs.items():
        assert_same(cached.inputs[name], array)
        assert cached.inputs[name].flags.writeable == array.flags.writeable  # body views
    assert (cached.id, cached.outputs, cached.parameters, cached.binary_data_output) == (
        plain.id,
        plain.outputs,
        plain.parameters,
        plain.binary_data_output,
    )


@pytest.mark.parametrize("datatype", DATATYPES)
def test_repeated_binary_requests_decode_as_uncached(datatype: str) -> None:
    for seed in range(3):  # same header, new tensor bytes each time
        x = sample(datatype, (2, 3), seed=seed)
        body, length = binary_body(
            [("x", datatype, x), ("y", "INT32", sample("INT32", (1, 4), seed=seed))],
            outputs=OUTPUTS,
            parameters={"priority": 2},
        )
        _same_decode(body, length)
    cacheable = datatype not in ("BOOL", "BYTES")  # those bytes are checked on every request
    assert len(cache._requests) == (1 if cacheable else 0)


def test_cached_header_still_rejects_a_body_of_the_wrong_length() -> None:
    body, length = binary_body([("x", "FP32", sample("FP32"))])
    cache.decode_request(body, length)
    assert len(cache._requests) == 1
    for bad in (body[:-4], body + b"\0" * 4):
        with pytest.raises(InvalidArgumentError, match="binary_data_size") as cached:
            cache.decode_request(bad, length)
        with pytest.raises(InvalidArgumentError) as plain:
            decode_infer_request(bad, length)
        assert str(cached.value) == str(plain.value)


def test_bool_bytes_are_checked_even_for_a_header_seen_before() -> None:
    good = np.array([[True, False]])
    body, length = binary_body([("b", "BOOL", good)])
    cache.decode_request(body, length)
    bad = body[:-1] + b"\x02"
    with pytest.raises(InvalidArgumentError, match="BOOL"):
        cache.decode_request(bad, length)


def test_requests_with_an_id_or_json_data_are_not_cached() -> None:
    body, length = binary_body([("x", "FP32", sample("FP32"))], id="req-1")
    assert cache.decode_request(body, length).id == "req-1"
    json_and_binary = binary_body([("x", "FP32", sample("FP32"))])
    cache.decode_request(*json_and_binary)
    assert len(cache._requests) == 1  # only the request without an id
    assert cache.decode_request(b'{"inputs": []}', None).inputs == {}


def test_parameters_are_a_fresh_dict_per_request() -> None:
    body, length = binary_body([("x", "FP32", sample("FP32"))], parameters={"timeout": 5})
    first = cache.decode_request(body, length)
    first.parameters["timeout"] = 99
    assert cache.decode_request(body, length).parameters == {"timeout": 5}


def test_the_cache_is_emptied_when_full() -> None:
    for i in range(cache.LIMIT + 3):
        body, length = binary_body([(f"x{i}", "FP32", sample("FP32"))])
        cache.decode_request(body, length)
    assert 0 < len(cache._requests) <= cache.LIMIT


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "BYTES"])
def test_responses_are_byte_identical_to_uncached(datatype: str) -> None:
    requested = [RequestedOutput("a", True), RequestedOutput("b", None)]
    for seed in range(3):
        big_endian = sample(datatype, (3, 2), seed=seed)
        if big_endian.dtype.itemsize > 1 and datatype != "BF16":
            big_endian = big_endian.astype(big_endian.dtype.newbyteorder(">"))
        strided = sample("FP32", (4, 6), seed=seed)[:, ::2]  # not C-contiguous
        outputs = {"a": big_endian, "b": strided}
        expected = encode_infer_response("m", "1", "", outputs, requested, True)
        assert cache.encode_response("m", "1", "", outputs, requested, True) == expected
    assert len(cache._responses) == 1


def test_responses_with_json_outputs_or_an_id_render_as_uncached() -> None:
    outputs = {"a": sample("INT32", (1, 16)), "s": sample("BYTES", (2,))}
    cases = [
        ("", [RequestedOutput("a", False)], True),
        ("", [RequestedOutput("a", None)], False),
        ("id-7", [RequestedOutput("a", True)], True),
        ("", [RequestedOutput("s", True)], True),  # BYTES: rendered element by element
        ("", [], True),
    ]
    for request_id, requested, binary in cases:
        expected = encode_infer_response("m", "1", request_id, outputs, requested, binary)
        assert cache.encode_response("m", "1", request_id, outputs, requested, binary) == expected
    assert cache._responses == {}
