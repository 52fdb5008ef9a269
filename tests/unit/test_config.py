from __future__ import annotations

from pathlib import Path

import pytest

from accelserve.config import config_to_json, parse_config, read_config, select_versions
from accelserve.errors import ConfigError

FULL = """
name: "m"
platform: "onnxruntime_onnx"
max_batch_size: 8
version_policy: { specific: { versions: [1, 3] } }
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1, 4 ] optional: false reshape: { shape: [4] } } ]
output [ { name: "Y" data_type: TYPE_STRING dims: [ 1 ] } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
  preserve_ordering: true
  priority_levels: 3
  default_priority_level: 2
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5 allow_timeout_override: true max_queue_size: 7 }
}
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] } ]
parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
"""


def test_parses_the_supported_subset() -> None:
    config = parse_config(FULL)
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 7
    assert list(config.instance_group[0].gpus) == [0, 1]
    assert config.parameters["intra_op_thread_count"].string_value == "2"


def test_json_form_uses_numbers_like_triton() -> None:
    data = config_to_json(parse_config(FULL))
    assert data["input"][0]["dims"] == [-1, 4]
    assert data["input"][0]["data_type"] == "TYPE_FP32"
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert data["version_policy"]["specific"]["versions"] == [1, 3]


def test_unsupported_field_names_field_and_line() -> None:
    text = 'name: "m"\nmax_batch_size: 1\nmodel_operations { }\n'
    with pytest.raises(ConfigError, match=r"line 3: field 'model_operations' is not supported"):
        parse_config(text)


def test_syntax_error_is_clear() -> None:
    with pytest.raises(ConfigError, match=r"config\.pbtxt"):
        parse_config('name: "m" max_batch_size: "eight"')


def test_name_must_match_directory(tmp_path: Path) -> None:
    model = tmp_path / "right"
    model.mkdir()
    (model / "config.pbtxt").write_text('name: "wrong"')
    with pytest.raises(ConfigError, match="expected 'right'"):
        read_config(model)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", ["3"]),
        ("version_policy: { latest: { num_versions: 2 } }", ["2", "3"]),
        ("version_policy: { all: {} }", ["1", "2", "3"]),
        ("version_policy: { specific: { versions: [1] } }", ["1"]),
    ],
)
def test_version_policy(tmp_path: Path, policy: str, expected: list[str]) -> None:
    model = tmp_path / "m"
    for v in (1, 2, 3):
        (model / str(v)).mkdir(parents=True)
    (model / "config.pbtxt").write_text(policy)
    config = read_config(model)
    assert select_versions(model, config) == expected


def test_specific_version_missing(tmp_path: Path) -> None:
    model = tmp_path / "m"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text("version_policy: { specific: { versions: [4] } }")
    with pytest.raises(ConfigError, match=r"\[4\]"):
        select_versions(model, read_config(model))


def test_negative_max_batch_size(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.pbtxt").write_text("max_batch_size: -2")
    with pytest.raises(ConfigError, match="max_batch_size"):
        read_config(model)


def test_config_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    # Found by tests/unit/test_config_properties.py: it used to raise UnicodeDecodeError.
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.pbtxt").write_bytes(b'name: "m"\nplatform: "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"m/config.pbtxt: expected UTF-8 text; byte 24 is 0xe9"):
        read_config(model)


def test_unknown_escape_in_a_string_is_a_config_error() -> None:
    # Found by tests/unit/test_config_properties.py: protobuf kept "\{" with a DeprecationWarning.
    text = 'name: "m"\n# a comment with "\\{"\nplatform: "x\\{y"\n'
    with pytest.raises(ConfigError, match=r"config.pbtxt line 3: invalid escape sequence '\\\\\{'"):
        parse_config(text)


@pytest.mark.parametrize("value", [r"a\\{", r"tab\t", r"q\"#", r"\x41\101", r"\u00e9"])
def test_known_escapes_are_read(value: str) -> None:
    parse_config(f'name: "m"\nplatform: "{value}"  # "\\{{" in a comment is not a string\n')
