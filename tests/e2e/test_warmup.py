"""Model warm-up (model_warmup in config.pbtxt) through the real server: the samples run on
every instance before the model reports ready (zero, random and file data, batch size, count),
are not counted as inferences, and a sample that is malformed or fails fails the load with a
clear reason while the other models serve."""

from __future__ import annotations

import json
import struct
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.conftest import ServerProcess, copy_example
from tests.e2e.test_onnx_strings import CONFIG as STRING_CONFIG
from tests.e2e.test_onnx_strings import build_string_cast

# Records what each run received: one JSON line per execute, in a file beside the model.
RECORDER = textwrap.dedent(
    """
    import json
    from pathlib import Path

    import numpy as np


    class Model:
        def initialize(self, config, device):
            self.log = Path(__file__).parent.parent / "runs.jsonl"

        def execute(self, batch):
            x, t = batch["x"], batch["t"]
            with self.log.open("a") as f:
                f.write(json.dumps({"shape": list(x.shape), "sum": float(x.sum()),
                                    "t": [int(v) for v in t.reshape(-1)]}) + "\\n")
            return {"y": x * 2}
    """
)
RECORDER_CONFIG = """
backend: "python"
max_batch_size: 4
input [
  { name: "x" data_type: TYPE_FP32 dims: [ 3 ] },
  { name: "t" data_type: TYPE_INT32 dims: [ 2 ] }
]
output [{ name: "y" data_type: TYPE_FP32 dims: [ 3 ] }]
instance_group [{ count: 2 kind: KIND_CPU }]
model_warmup [
  {
    name: "zeros"
    batch_size: 2
    count: 2
    inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] zero_data: true } }
    inputs { key: "t" value: { data_type: TYPE_INT32 dims: [ 2 ] input_data_file: "t.bin" } }
  },
  {
    name: "random"
    inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 3 ] random_data: true } }
    inputs { key: "t" value: { data_type: TYPE_INT32 dims: [ 2 ] zero_data: true } }
  }
]
"""


def build_recorder(root: Path, name: str, config: str) -> Path:
    model = root / name
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text(config)
    (model / "1" / "model.py").write_text(RECORDER)
    (model / "warmup").mkdir()
    # batch 2 x dims [2] INT32, little-endian row-major
    (model / "warmup" / "t.bin").write_bytes(np.array([7, 8, 9, 10], "<i4").tobytes())
    return model


def string_warmup() -> str:
    return STRING_CONFIG + textwrap.dedent(
        """
        model_warmup [{
          name: "text"
          batch_size: 1
          inputs { key: "TEXT" value: { data_type: TYPE_STRING dims: [ 3 ]
                                        input_data_file: "text.bin" } }
        }]
        """
    )


def build_string_model(root: Path, name: str, elements: list[bytes]) -> None:
    build_string_cast(root)
    (root / "string_cast").rename(root / name)
    (root / name / "config.pbtxt").write_text(string_warmup())
    data = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    (root / name / "warmup").mkdir()
    (root / name / "warmup" / "text.bin").write_bytes(data)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("warmup") / "models"
    build_recorder(root, "recorder", RECORDER_CONFIG)
    build_string_model(root, "text_ok", [b"1", b"2.5", b"-3"])
    build_string_model(root, "text_fails", [b"1", b"two", b"3"])  # Cast cannot read "two"
    build_recorder(root, "unknown_input", RECORDER_CONFIG.replace('key: "t"', 'key: "nope"', 1))
    build_recorder(root, "too_big", RECORDER_CONFIG.replace("batch_size: 2", "batch_size: 9"))
    short = build_recorder(root, "short_file", RECORDER_CONFIG)
    (short / "warmup" / "t.bin").write_bytes(b"\0" * 12)
    copy_example("simple", root)
    return root


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(repository)
    yield process
    process.stop()


def test_samples_run_on_every_instance_before_ready(
    server: ServerProcess, repository: Path
) -> None:
    runs = [
        json.loads(line)
        for line in (repository / "recorder" / "runs.jsonl").read_text().splitlines()
    ]
    # "zeros": 2 runs x 2 instances, batch 2, t from the file; "random": 1 run x 2 instances
    zeros = [r for r in runs if r["shape"] == [2, 3]]
    assert len(zeros) == 4
    assert all(r["sum"] == 0 and r["t"] == [7, 8, 9, 10] for r in zeros)
    random = [r for r in runs if r["shape"] == [1, 3]]
    assert len(random) == 2 and all(r["t"] == [0, 0] and r["sum"] > 0 for r in random)
    client = httpclient.InferenceServerClient(server.url)
    assert client.is_model_ready("recorder")
    stats = client.get_inference_statistics("recorder")["model_stats"][0]
    assert stats["inference_count"] == 0  # warm-up is not a client's inference
    assert client.is_model_ready("text_ok")


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("text_fails", "warm-up sample 'text' failed: input 'TEXT': element 1 is 'two'"),
        ("unknown_input", "model_warmup 'zeros': input nope is not an input of the model"),
        (
            "too_big",
            "model_warmup 'zeros' batch_size: expected at most max_batch_size 4; received 9",
        ),
        ("short_file", "input_data_file 't.bin': expected 16 bytes (4 INT32 elements"),
    ],
)
def test_bad_warmup_fails_the_load_with_its_reason(
    server: ServerProcess, model: str, needle: str
) -> None:
    index = httpx.post(f"{server.base}/v2/repository/index", json={}).json()
    row = next(r for r in index if r["name"] == model)
    assert row["state"] == "UNAVAILABLE"
    assert needle in row["reason"]
    response = httpx.get(f"{server.base}/v2/models/{model}/ready")
    assert response.status_code == 400
    # the others keep serving
    client = httpclient.InferenceServerClient(server.url)
    a = np.ones((1, 16), dtype=np.int32)
    inputs = [httpclient.InferInput(f"INPUT{i}", [1, 16], "INT32") for i in (0, 1)]
    for tensor in inputs:
        tensor.set_data_from_numpy(a)
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), 2 * a)
