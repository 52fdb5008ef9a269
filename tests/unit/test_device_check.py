"""scripts/device_check.py's runner: a failing, raising, lying or hung step is recorded as
FAILED, the steps after it still run, and the check exits 1 (the dry run test covers success)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "device_check", ROOT / "scripts" / "device_check.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_failed_steps_are_recorded_and_the_rest_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dc = _script()
    out = tmp_path / "out"
    monkeypatch.setenv("OUT", str(out))
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("ACCELSERVE_PERFORMANCE_MD", str(tmp_path / "PERFORMANCE.md"))

    def raises(out: Path, dry: bool, env: dict[str, str]) -> int:
        raise RuntimeError("broken step")

    def hangs(out: Path, dry: bool, env: dict[str, str]) -> int:
        silent = [
            sys.executable,
            "-c",
            "import time; print('started', flush=True); time.sleep(120)",
        ]
        return int(dc._call(silent, out / "hang.log", env, 0.5))

    def exits_2(out: Path, dry: bool, env: dict[str, str]) -> int:
        return int(
            dc._call([sys.executable, "-c", "raise SystemExit(2)"], out / "two.log", env, 60)
        )

    def writes(out: Path, dry: bool, env: dict[str, str]) -> int:
        (out / "good.txt").write_text("done\n")
        return 0

    steps = [
        dc.Step("raises", "raises.txt", raises),
        dc.Step("hangs", "hang.log", hangs),
        dc.Step("exits", "two.log", exits_2),
        dc.Step("lies", "never-written.txt", lambda out, dry, env: 0),
        dc.Step("good", "good.txt", writes),
    ]
    assert dc.main(steps) == 1
    summary = (out / "summary.md").read_text()
    assert "| raises | FAILED (-1) |" in summary
    assert "| hangs | FAILED (timed out) |" in summary
    assert "killed after" in (out / "hang.log").read_text()
    assert "started" in (out / "hang.log").read_text()
    assert "| exits | FAILED (2) |" in summary
    assert "| lies | FAILED (-2) |" in summary  # exit 0 without its file is no success
    assert "| good | ok |" in summary
