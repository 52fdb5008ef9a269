"""One server process for the TF Serving API tests, on a repository of non-TensorFlow models:
``simple`` (ONNX, two INT32 inputs and outputs), ``onnx_mlp`` (one FP32 input and output),
``text`` (a Python model with BYTES inputs and outputs), ``versioned`` (``simple`` as versions 1
and 2) and ``broken`` (a model whose load fails)."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, copy_example
from tests.model_builders import build_onnx

TEXT_MODEL = textwrap.dedent(
    """
    import numpy as np


    class Model:
        def initialize(self, config, device):
            pass

        def execute(self, batch):
            text = batch["text"]
            upper = np.array([[t.upper() for t in row] for row in text], dtype=object)
            raw = np.array([[t + b"\\xff" for t in row] for row in text], dtype=object)
            length = np.array([[len(t) for t in row] for row in text], dtype=np.int32)
            return {"upper": upper, "raw_bytes": raw, "length": length}
    """
)
TEXT_CONFIG = """
backend: "python"
max_batch_size: 8
input [{ name: "text" data_type: TYPE_STRING dims: [1] }]
output [{ name: "upper" data_type: TYPE_STRING dims: [1] },
        { name: "raw_bytes" data_type: TYPE_STRING dims: [1] },
        { name: "length" data_type: TYPE_INT32 dims: [1] }]
"""


@pytest.fixture(scope="session")
def tfs_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("tfserving") / "models"
    simple = copy_example("simple", repository)
    build_onnx(repository)
    text = repository / "text"
    (text / "1").mkdir(parents=True)
    (text / "config.pbtxt").write_text(TEXT_CONFIG)
    (text / "1" / "model.py").write_text(TEXT_MODEL)
    versioned = repository / "versioned"
    for version in ("1", "2"):
        shutil.copytree(simple / "1", versioned / version)
    config = (simple / "config.pbtxt").read_text().replace('name: "simple"', 'name: "versioned"')
    (versioned / "config.pbtxt").write_text(config + "\nversion_policy: { all: {} }\n")
    broken = repository / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 4\n')
    return repository


@pytest.fixture(scope="session")
def tfs_server(tfs_repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tfs_repository)
    yield process
    process.stop()
