"""scripts/device_check.py with DRY_RUN=1: every step runs on the CPU with tiny shapes and
writes its file (the kernels step through the CUDA code path with Triton's interpreter), the
blocks land in the output folder, docs/PERFORMANCE.md stays as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STEPS = {
    "device": "device.txt",
    "wheels": "wheels.log",
    "gpu-tests": "gpu-tests.xml",
    "kernels": "kernels.log",
    "server": "server.md",
}


def test_dry_run_runs_every_step_and_leaves_the_docs_alone(tmp_path: Path) -> None:
    docs = ROOT / "docs" / "PERFORMANCE.md"
    before = docs.read_bytes()
    out = tmp_path / "out"
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(out)}
    env.pop("ACCELSERVE_PERFORMANCE_MD", None)
    env.pop("ACCELSERVE_RESULTS_DIR", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "device_check.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    for step, name in STEPS.items():
        assert f"| {step} | ok |" in summary, summary
        assert (out / name).stat().st_size > 0, name
    assert docs.read_bytes() == before
    performance = (out / "PERFORMANCE.md").read_text()
    assert "<!-- BEGIN kernels -->" in performance
    assert "<!-- BEGIN device-check-server -->" in performance
    assert (out / "results" / "bench_kernels.csv").exists()
    server = (out / "server.md").read_text()
    assert "| native | cpu | 64 |" in server and "| minilm_head | cpu | 64 |" in server
    # The kernels step ran the CUDA code path: the Triton kernels, under the interpreter.
    kernels = (out / "kernels.log").read_text()
    for op in ("matmul", "linear", "add", "reduce_sum", "l2_normalize", "masked_mean_pool_l2"):
        assert any(line.startswith(op) and " triton " in line for line in kernels.splitlines()) or (
            op == "matmul" and " blocked " in kernels
        ), op
