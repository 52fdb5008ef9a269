"""Shared helpers for benchmark scripts: where results go, CSV rows, machine description,
PERFORMANCE.md blocks.

Every CSV and chart a benchmark writes lives in ``benchmarks/results/``, named after the
benchmark that wrote it (``bench_simple.csv``, ``bench_kernels_cpu.png``): scripts ask
``result_path`` for it and never build the folder path themselves.

Each benchmark owns one block of docs/PERFORMANCE.md between ``<!-- BEGIN name -->`` and
``<!-- END name -->`` markers and rewrites only that block, so benchmarks never clobber each
other's tables.
"""

from __future__ import annotations

import csv
import datetime as _dt
import fcntl
import math
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A dry run (scripts/device_check.py) points both elsewhere, so it never touches the real ones.
PERFORMANCE_MD = Path(
    os.environ.get("ACCELSERVE_PERFORMANCE_MD") or ROOT / "docs" / "PERFORMANCE.md"
).resolve()
RESULTS_DIR = Path(
    os.environ.get("ACCELSERVE_RESULTS_DIR") or ROOT / "benchmarks" / "results"
).resolve()


def result_path(name: str) -> Path:
    """``benchmarks/results/<name>``: the one place benchmark CSVs, charts and logs go."""
    if not name.startswith("bench_") and not name.endswith(".log"):
        raise ValueError(f"result {name!r}: name it after its benchmark, e.g. 'bench_simple.csv'")
    return RESULTS_DIR / name


def repo_relative(path: Path) -> str:
    """``path`` as written in docs and messages: relative to the repository root (absolute
    when outside it, as in a dry run's output folder)."""
    path = path.resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()


def link_from_docs(path: Path) -> str:
    """``path`` as a link in docs/PERFORMANCE.md (relative to docs/)."""
    return os.path.relpath(path, PERFORMANCE_MD.parent).replace(os.sep, "/")


def commit() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True, stderr=subprocess.DEVNULL
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "uncommitted"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}"


def today() -> str:
    return _dt.date.today().isoformat()


def command_line() -> str:
    """The command that reproduces this run, as `python -m benchmarks.x.y ARGS` from the root."""
    script = Path(sys.argv[0]).resolve()
    if script.is_relative_to(ROOT) and script.suffix == ".py":
        module = ".".join(script.relative_to(ROOT).with_suffix("").parts)
        return " ".join(["python -m", module, *sys.argv[1:]])
    return " ".join(["python", *sys.argv])


def append_csv(path: Path, rows: Iterable[Mapping[str, object]]) -> None:
    """Append rows (adding a header when the file is new); the columns must be the file's."""
    rows = list(rows)
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys())
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as f:
            existing = next(csv.reader(f), [])
        if existing != fields:  # appending would misalign the columns
            raise ValueError(
                f"{path}: its columns {existing} differ from the rows' {fields}; "
                "write to another file"
            )
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def markdown_table(header: list[str], rows: Iterable[Iterable[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the block ``name`` in docs/PERFORMANCE.md."""
    PERFORMANCE_MD.parent.mkdir(parents=True, exist_ok=True)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    with open(PERFORMANCE_MD.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = PERFORMANCE_MD.read_text() if PERFORMANCE_MD.exists() else "# Performance\n"
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1]
            text = head + block + tail
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        PERFORMANCE_MD.write_text(text)


def ratio(a: float, b: float) -> str:
    """``a / b`` for a table ("1.23x"); "-" where either is missing (NaN) or ``b`` is 0."""
    return "-" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"


def plain_ratio(a: float, b: float) -> float | str:
    """``a / b`` for a CSV cell (3 decimals); empty where either is missing or ``b`` is 0."""
    return "" if math.isnan(a) or math.isnan(b) or b == 0 else round(a / b, 3)
