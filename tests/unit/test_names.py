"""The one model-name check (``accelserve.names``) every route runs before a name is used."""

from __future__ import annotations

import pytest

from accelserve.errors import InvalidArgumentError
from accelserve.names import check_model_name


@pytest.mark.parametrize(
    "name",
    ["simple", "minilm_transformer", "a.b-c_d", "a..b", "é" * 127, "x" * 255, "modèle 1"],
)
def test_names_that_can_be_a_directory_pass(name: str) -> None:
    check_model_name(name)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("", "non-empty"),
        ("x" * 256, "at most 255 bytes in UTF-8, not 256"),
        ("é" * 128, "at most 255 bytes in UTF-8, not 256"),  # 128 characters, 256 bytes
        ("a/b", "path separator"),
        ("..", "start with '.'"),
        (".hidden", "start with '.'"),
        ("a\\b", "path separator"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
    ],
)
def test_names_that_cannot_are_invalid_arguments(name: str, rule: str) -> None:
    with pytest.raises(InvalidArgumentError, match="model name: expected") as info:
        check_model_name(name)
    assert rule in info.value.message
    assert "received" in info.value.message
    assert len(info.value.message) < 200  # a long name is shown cut short
