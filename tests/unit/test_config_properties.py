"""Property-based tests (hypothesis) of the config.pbtxt reader.

Whatever a model directory's ``config.pbtxt`` holds, ``read_config`` returns a validated
config or raises ``ConfigError`` naming the file; anything else (UnicodeDecodeError,
ValueError, a protobuf error) would fail the whole repository scan instead of marking one
model UNAVAILABLE. Inputs: random bytes, random text, and random mutations (characters cut,
inserted, replaced; tokens swapped) of the example repository's configs. Example counts come
from the hypothesis profile in ``tests/conftest.py``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from accelserve.config import parse_config, read_config
from accelserve.errors import AccelServeError, ConfigError
from tests.conftest import EXAMPLES

VALID = {p.parent.name: p.read_text() for p in sorted(EXAMPLES.glob("*/config.pbtxt"))}
TOKENS = re.compile(r'"[^"\n]*"|[A-Za-z_][A-Za-z0-9_]*|-?\d+(?:\.\d+)?|[{}\[\]:,<>]|#[^\n]*')
# Pieces of the text format (and of what breaks it) for insertions.
PIECES = st.sampled_from(
    [
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        '"',
        "\\",
        "#",
        "\n",
        "-1",
        "99999999999999999999999",
        "1e400",
        "nan",
        "TYPE_FP32",
        "TYPE_INVALID",
        "name",
        "dims",
        "max_batch_size",
        "input",
        "parameters",
        "dynamic_batching",
        "\\x00",
        "\udcff",
        "\x00",
        "é",
    ]
)


def reads_or_rejects(raw: bytes, model: str = "m") -> bool:
    """Write ``raw`` as ``<model>/config.pbtxt`` and read it: True when it was read, False when
    ConfigError rejected it; any other exception fails the test."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / model
        model_dir.mkdir()
        (model_dir / "config.pbtxt").write_bytes(raw)
        try:
            read_config(model_dir)
        except ConfigError as exc:
            assert f"{model}/config.pbtxt" in exc.message or f"model '{model}'" in exc.message
            return False
    return True


@given(st.binary(max_size=512))
def test_random_bytes_are_read_or_rejected_with_a_config_error(raw: bytes) -> None:
    reads_or_rejects(raw)


@given(st.text(max_size=256))
def test_random_text_is_parsed_or_rejected_with_a_config_error(text: str) -> None:
    try:
        parse_config(text)
    except ConfigError:
        pass
    except AccelServeError as exc:  # pragma: no cover - a project error of the wrong kind
        raise AssertionError(f"expected ConfigError, got {type(exc).__name__}") from exc


Edit = tuple[str, int, int, str]
EDITS = st.tuples(
    st.sampled_from(["cut", "insert", "replace", "swap_tokens", "drop_token"]),
    st.integers(min_value=0, max_value=10**6),
    st.integers(min_value=0, max_value=10**6),
    PIECES | st.text(min_size=1, max_size=4),
)


def edit(text: str, change: Edit) -> str:
    kind, first, second, piece = change
    if kind in ("swap_tokens", "drop_token"):
        spans = [m.span() for m in TOKENS.finditer(text)]
        if not spans:
            return text
        a = spans[first % len(spans)]
        if kind == "drop_token":
            return text[: a[0]] + text[a[1] :]
        b = spans[second % len(spans)]
        (a0, a1), (b0, b1) = sorted([a, b])
        if a1 > b0:
            return text
        return text[:a0] + text[b0:b1] + text[a1:b0] + text[a0:a1] + text[b1:]
    at = first % (len(text) + 1)
    if kind == "cut":
        return text[:at] + text[at + second % 16 :]
    if kind == "insert":
        return text[:at] + piece + text[at:]
    return text[:at] + piece + text[at + len(piece) :]


@given(st.sampled_from(sorted(VALID)), st.lists(EDITS, min_size=1, max_size=4))
def test_mutated_example_configs_are_read_or_rejected_with_a_config_error(
    model: str, edits: list[Edit]
) -> None:
    text = VALID[model]
    for change in edits:
        text = edit(text, change)
    reads_or_rejects(text.encode("utf-8", "surrogatepass"), model)


def test_the_example_configs_are_read() -> None:
    # The mutations start from configs the reader accepts (else the test above proves little).
    assert len(VALID) >= 5
    for model, text in VALID.items():
        assert reads_or_rejects(text.encode(), model), model
