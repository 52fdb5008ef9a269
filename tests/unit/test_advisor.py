"""accelserve advise: measure the example models on this host's devices and recommend a config.

Runs the real command (in process through ``accelserve.cli.main``, and once as a subprocess)
on the ``simple`` ONNX model with short measurements.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

from accelserve.cli import main
from accelserve.config import parse_config, read_config
from accelserve.devices import Device
from accelserve.protocol.model_config_pb2 import ModelInstanceGroup
from accelserve.tools.advisor.candidates import Candidate, Measurement, recommend
from accelserve.tools.bench.runner import StepResult
from accelserve.tools.bench.sweep import LatencySummary
from tests.conftest import ROOT, copy_example

QUICK = ["--duration", "0.3", "--warmup", "0.1", "--quiet"]


@pytest.fixture(scope="module")
def simple_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example("simple", tmp_path_factory.mktemp("advise"))


def _advise(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["advise", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_candidate_measured_and_huge_objective_picks_max_throughput(
    simple_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (simple_dir / "config.pbtxt").read_text()
    table = tmp_path / "advise.csv"
    rc, out, _ = _advise(
        capsys,
        str(simple_dir),
        "--p99-ms",
        "100000",
        "--devices",
        "cpu",
        "--batch-sizes",
        "1,4",
        "--instances",
        "1,2",
        "--csv",
        str(table),
        *QUICK,
    )
    assert rc == 0, out
    rows = _rows(table)
    assert [(r["device"], r["batch_size"], r["instances"]) for r in rows] == [
        ("cpu:0", "1", "1"),
        ("cpu:0", "1", "2"),
        ("cpu:0", "4", "1"),
        ("cpu:0", "4", "2"),
    ]
    for r in rows:
        assert float(r["throughput_rps"]) > 0 and int(r["requests"]) > 0
        assert r["failed"] == "0" and r["meets_objective"] == "True"
    # The override reached the scheduler: batch-1 candidates never batch, batch-4 ones do.
    assert all(float(r["avg_batch"]) == 1.0 for r in rows if r["batch_size"] == "1")
    assert all(float(r["avg_batch"]) > 1.5 for r in rows if r["batch_size"] == "4")
    best = max(rows, key=lambda r: float(r["throughput_rps"]))
    assert [r["recommended"] for r in rows].count("True") == 1 and best["recommended"] == "True"
    table_lines = [line for line in out.splitlines() if "cpu:0" in line and "batch" not in line]
    assert len(table_lines) == 4 and sum(line.startswith("*") for line in table_lines) == 1
    assert "recommended (*)" in out
    # Without --write-config the fields are printed and the config is left alone.
    assert "preferred_batch_size: " + best["batch_size"] in out
    assert f"count: {best['instances']}" in out and "KIND_CPU" in out
    assert (simple_dir / "config.pbtxt").read_text() == before


def test_impossible_objective_reports_none_meets_and_writes_nothing(
    simple_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (simple_dir / "config.pbtxt").read_text()
    table = tmp_path / "advise.csv"
    argv = [str(simple_dir), "--p99-ms", "0.000001", "--batch-sizes", "1,2", "--instances", "1"]
    rc, out, _ = _advise(capsys, *argv, "--csv", str(table), "--write-config", *QUICK)
    assert rc == 1
    assert "no candidate meets p99 <= 1e-06 ms" in out
    assert "not writing a config" in out
    rows = _rows(table)
    assert len(rows) == 2 and all(r["meets_objective"] == "False" for r in rows)
    lowest = min(rows, key=lambda r: float(r["lat_p99_ms"]))
    assert lowest["recommended"] == "True"
    assert (simple_dir / "config.pbtxt").read_text() == before
    assert not (simple_dir / "config.pbtxt.bak").exists()


def test_write_config_keeps_the_other_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = copy_example("simple", tmp_path)
    config = model_dir / "config.pbtxt"
    config.write_text(
        config.read_text().replace(
            "dynamic_batching { }", "dynamic_batching { max_queue_delay_microseconds: 100 }"
        )
    )
    original = config.read_text()
    argv = [str(model_dir), "--batch-sizes", "4", "--instances", "2", "--write-config", *QUICK]
    rc, out, _ = _advise(capsys, *argv)
    assert rc == 0, out
    assert f"wrote {model_dir / 'config.pbtxt'}" in out
    written = parse_config((model_dir / "config.pbtxt").read_text())
    assert list(written.dynamic_batching.preferred_batch_size) == [4]
    assert [(g.count, g.kind) for g in written.instance_group] == [(2, ModelInstanceGroup.KIND_CPU)]
    before = parse_config(original)
    assert written.max_batch_size == before.max_batch_size == 8
    assert written.dynamic_batching.max_queue_delay_microseconds == 100
    assert written.input == before.input and written.output == before.output
    assert written.platform == "onnxruntime_onnx"
    assert written.parameters["intra_op_thread_count"].string_value == "1"
    assert (model_dir / "config.pbtxt.bak").read_text() == original
    read_config(model_dir)  # the repository accepts it


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "does not exist"),
        (
            ["{model}", "--devices", "cuda:63"],
            "cuda:63 is not present on this host; present: cpu:0",
        ),
        (["{model}", "--devices", "cpu,tpu:63"], "tpu:63 is not present"),
        (["{model}", "--devices", "abacus"], "device: expected one of"),
        (["{model}", "--batch-sizes", "1,x"], "--batch-sizes: expected comma-separated"),
        (["{model}", "--batch-sizes", "16"], "expected values in 1..8"),
        (["{model}", "--instances", "0"], "--instances: expected values >= 1; received 0"),
        (["{model}", "--instances", "two"], "--instances: expected comma-separated"),
        (["{model}", "--p99-ms", "0"], "--p99-ms: expected a latency > 0 ms; received 0"),
        (["{model}", "--p99-ms", "-5"], "--p99-ms: expected a latency > 0 ms; received -5"),
        (["{model}", "--shape", "NOPE:3"], "unknown input(s) ['NOPE']"),
    ],
)
def test_bad_arguments_are_clear_errors(
    simple_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    args = [a.format(model=simple_dir, missing=tmp_path / "nope") for a in argv]
    rc, out, err = _advise(capsys, *args, *QUICK)
    assert rc == 2
    assert message in err and err.startswith("accelserve advise: ")
    assert "Traceback" not in err and out == ""


def test_non_numeric_objective_is_a_usage_error(
    simple_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["advise", str(simple_dir), "--p99-ms", "fast"])
    assert exc.value.code == 2
    assert "--p99-ms: invalid float value: 'fast'" in capsys.readouterr().err


def _measured(batch: int, rps: float, p99_ms: float, failed: int = 0) -> Measurement:
    latency = LatencySummary(100, 0.0, 0.0, 0.0, 0.0, p99_ms / 1e3, p99_ms / 1e3)
    result = StepResult("concurrency", batch, 100, failed, 100 / rps, latency, {})
    return Measurement(Candidate(Device("cpu"), batch, 1), result)


def test_recommend_rule() -> None:
    slow = _measured(1, 1000.0, 1.0)
    fast = _measured(8, 5000.0, 4.0)
    failing = _measured(32, 9000.0, 2.0, failed=1)
    assert recommend([slow, fast, failing], None) == (fast, True)
    assert recommend([slow, fast, failing], 5.0) == (fast, True)
    assert recommend([slow, fast, failing], 3.0) == (slow, True)
    assert recommend([slow, fast, failing], 0.5) == (slow, False)  # lowest p99, flagged
    assert recommend([failing], 10.0) == (None, False)
    assert math.isclose(fast.throughput, 5000.0)


def test_cli_subprocess_prints_progress_table_and_chart(simple_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    chart = tmp_path / "advise.png"
    command = [sys.executable, "-m", "accelserve.cli", "advise", str(simple_dir)]
    argv = ["--p99-ms", "1000", "--batch-sizes", "2", "--instances", "1", "--duration", "0.3"]
    proc = subprocess.run(
        [*command, *argv, "--warmup", "0.1", "--png", str(chart)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[1/1] cpu:0 batch 2 x 1 instance(s), concurrency 2" in proc.stderr
    assert "recommended (*): cpu:0, preferred batch 2, 1 instance(s)" in proc.stdout
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
