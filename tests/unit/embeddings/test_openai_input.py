"""Parsing and checking OpenAI embedding inputs, without a server."""

from __future__ import annotations

import pytest

from accelserve.frontends.openai import OpenAIError, _parse_input
from accelserve.services.embeddings import EmbeddingModel

MODEL = EmbeddingModel(
    name="m",
    text_input="text",
    output="embedding",
    dims=4,
    max_rows=8,
    count_output="token_count",
    ids_inputs=("input_ids", "attention_mask"),
    max_length=5,
    vocab_size=100,
)


@pytest.mark.parametrize(
    ("value", "texts", "tokens"),
    [
        ("a", ["a"], None),
        (["a", "b c"], ["a", "b c"], None),
        ([1, 2, 3], None, [[1, 2, 3]]),
        ([[1], [2, 3]], None, [[1], [2, 3]]),
    ],
)
def test_the_four_input_forms(value: object, texts: list | None, tokens: list | None) -> None:
    assert _parse_input(value, MODEL) == (texts, tokens)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "'input' is required"),
        ("", "input[0] is an empty string"),
        ([], "received an empty list"),
        (3, "received an integer"),
        ([[1, 2, 3, 4, 5, 6]], "input[0] is 6 tokens long; model 'm' accepts at most 5"),
        ([100], "token id 100 is outside 0..99"),
        ([[1], []], "input[1] is an empty list of token ids"),
        ([None], "input[0] is null"),
        (["a"] * 2049, "at most 2048 inputs per request; received 2049"),
    ],
)
def test_bad_inputs(value: object, message: str) -> None:
    with pytest.raises(OpenAIError) as info:
        _parse_input(value, MODEL)
    assert info.value.status == 400 and info.value.param == "input"
    assert message in info.value.message


def test_error_shape() -> None:
    status, headers, body = OpenAIError(400, "bad", "input", "code_x").response()
    assert status == 400 and (b"content-type", b"application/json") in headers
    assert (
        body
        == b'{"error":{"message":"bad","type":"invalid_request_error","param":"input","code":"code_x"}}'
    )
