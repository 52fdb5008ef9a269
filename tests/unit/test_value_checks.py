"""Value checks a config declares (``validation.ValueChecks``): token ids against the vocabulary,
the number of tokens, and text that must be UTF-8, refused with a message naming the input and
the value; a bad declaration is a ``ConfigError``."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.config import parse_config
from accelserve.errors import ConfigError, InvalidArgumentError
from accelserve.model import ModelVersion
from accelserve.types import InferRequest
from accelserve.validation import prepare_inputs, value_checks

CONFIG = """
name: "t"
max_batch_size: 8
input [
  { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "text" data_type: TYPE_STRING dims: [ 1 ] optional: true }
]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]
"""


def _params(**values: str) -> str:
    return "".join(
        f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in values.items()
    )


def _model(**params: str) -> ModelVersion:
    from accelserve.config import input_specs, output_specs

    config = parse_config(CONFIG + _params(**params))
    return ModelVersion.in_process(
        config,
        "1",
        {s.name: s for s in input_specs(config)},
        {s.name: s for s in output_specs(config)},
    )


TOKENS = {"token_id_inputs": "input_ids", "vocab_size": "100", "max_sequence_length": "6"}


def _ids(*rows: list[int]) -> InferRequest:
    ids = np.array(rows, dtype=np.int64)
    return InferRequest({"input_ids": ids, "attention_mask": np.ones_like(ids)})


def test_ids_inside_the_vocabulary_pass() -> None:
    prepare_inputs(_model(**TOKENS), _ids([0, 5, 99], [1, 2, 3]))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            ([1, 2, 3], [4, 100, 6]),
            "model 't' input 'input_ids': token id 100 at [1, 1] is out of range; expected token "
            "ids 0..99 (the model's vocabulary)",
        ),
        (([1, -5, 3],), "token id -5 at [0, 1] is out of range; expected token ids 0..99"),
        (
            ([1] * 7,),
            "model 't' input 'input_ids': 7 tokens; expected at most 6 (the model's "
            "max_sequence_length)",
        ),
    ],
)
def test_bad_ids_are_refused_naming_the_input_and_value(
    rows: tuple[list[int], ...], message: str
) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        prepare_inputs(_model(**TOKENS), _ids(*rows))
    assert message in str(info.value)


def test_without_a_vocabulary_only_negative_ids_are_refused() -> None:
    model = _model(token_id_inputs="input_ids")
    prepare_inputs(model, _ids([10**9]))
    with pytest.raises(
        InvalidArgumentError, match=r"token id -1 at \[0, 0\].*expected token ids >= 0"
    ):
        prepare_inputs(model, _ids([-1]))


def test_vocab_size_alone_checks_nothing() -> None:
    """The tokenizer states its vocab_size for others to read; it takes no ids itself."""
    model = _model(vocab_size="100")
    assert not model.checks.active
    prepare_inputs(model, _ids([1000]))


def _text(*values: bytes | str) -> InferRequest:
    array = np.array(list(values), dtype=object).reshape(-1, 1)
    ids = np.zeros((len(values), 1), np.int64)
    return InferRequest({"text": array, "input_ids": ids, "attention_mask": ids})


def test_text_that_is_not_utf8_is_refused_with_the_byte_offset() -> None:
    model = _model(text_inputs="text")
    prepare_inputs(model, _text(b"caf\xc3\xa9", "plain str"))
    with pytest.raises(InvalidArgumentError) as info:
        prepare_inputs(model, _text(b"fine", b"ab\xffcd"))
    assert str(info.value) == (
        "model 't' input 'text': element 1 is not UTF-8 text: byte 0xff at byte offset 2 "
        "(invalid start byte); expected UTF-8"
    )
    with pytest.raises(InvalidArgumentError, match=r"byte 0xc3 at byte offset 3 .*unexpected end"):
        prepare_inputs(model, _text(b"caf\xc3"))  # a truncated sequence
    with pytest.raises(InvalidArgumentError, match=r"element 0 is not UTF-8 text: character"):
        prepare_inputs(model, _text("lone \udcff surrogate"))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"token_id_inputs": "ids"}, "parameter 'token_id_inputs': expected INT8 or"),
        ({"token_id_inputs": "text"}, "'text' is BYTES"),
        ({"text_inputs": "input_ids"}, "parameter 'text_inputs': expected BYTES inputs"),
        ({"token_id_inputs": "input_ids", "vocab_size": "many"}, "'vocab_size': expected an"),
        (
            {"token_id_inputs": "input_ids", "max_sequence_length": "-1"},
            "'max_sequence_length': expected an integer >= 0",
        ),
    ],
)
def test_a_bad_declaration_is_a_config_error(params: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        value_checks(parse_config(CONFIG + _params(**params)))
