"""`accelserve bench` against a live server: its counts agree with the server's /stats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from accelserve.tools.bench.bench import BenchSettings, run_bench
from tests.conftest import ServerProcess


def test_bench_counts_match_server_statistics(server: ServerProcess) -> None:
    outcome = run_bench(
        BenchSettings(
            url=server.url, model="simple", concurrency=[1, 4], duration_s=1.0, warmup_s=0.2
        )
    )
    assert [s.level for s in outcome.steps] == [1, 4]
    for step in outcome.steps:
        assert step.ok > 0
        assert step.failed == 0
        assert step.server is not None
        assert step.server.requests == step.ok
        assert step.counts_match


def test_bench_command_writes_csv(server: ServerProcess, tmp_path: Path) -> None:
    csv = tmp_path / "bench.csv"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelserve.cli",
            "bench",
            "-m",
            "simple",
            "-u",
            server.url,
            "--concurrency",
            "2",
            "-n",
            "200",
            "--warmup",
            "0",
            "--csv",
            str(csv),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "req/s" in result.stdout
    rows = csv.read_text().splitlines()
    assert len(rows) == 2 and "200" in rows[1]
