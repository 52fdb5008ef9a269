"""One command that checks this project on a CUDA machine: `make device-check` (docs/device-check.md).

    python3 scripts/device_check.py            # on the accelerator: OUT=$OUT or device-check-out/
    DRY_RUN=1 python3 scripts/device_check.py  # every step on the CPU, tiny, in under a minute

Steps, each a subprocess with its own log and timing; a failing step is recorded and the next
one still runs; the exit code is 1 when any failed:

  device     nvidia-smi: name, driver, clocks, memory, power limit -> device.txt
  wheels     installs the carried .whl/ (scripts/device-wheels.sh) into /tmp/site
  gpu-tests  pytest: every test marked gpu or named for cuda/gpu -> gpu-tests.log, .xml
  kernels    benchmarks/kernels/run.py --device cuda (every op against torch) -> kernels.log
  server     scripts/device_check_server.py: the MLP and MiniLM's head on cuda:0, 1/16/64 connections

A real run writes docs/PERFORMANCE.md's blocks and benchmarks/results/ as the benchmarks do and
copies them into the output folder (the only thing a lease brings back). A dry run points both
into the output folder (ACCELSERVE_PERFORMANCE_MD, ACCELSERVE_RESULTS_DIR) and never touches the
real ones.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("DEVICE_CHECK_SITE", "/tmp/site"))
SMI_FIELDS = (
    "name,driver_version,pci.bus_id,memory.total,clocks.sm,clocks.mem,clocks.max.sm,"
    "clocks.max.mem,power.limit,temperature.gpu,utilization.gpu"
)
GPU_TESTS = "gpu or cuda"  # pytest -k: the gpu marker and every test named for CUDA
# Each step's limit in seconds: with the device query and the wheels (seconds each) the whole
# check stays inside issue 17's 7 minutes on the accelerator, even when every step runs long.
LIMIT_S = {"gpu-tests": 120, "kernels": 180, "server": 100}
TIMED_OUT = -9  # a step's exit code when it ran past its limit


@dataclass
class Step:
    name: str
    output: str  # the file (under OUT) the step must write
    run: Callable[[Path, bool, dict[str, str]], int]  # (out, dry, env) -> exit code


def _call(cmd: list[str], log: Path, env: dict[str, str], timeout: float) -> int:
    """Run ``cmd`` from the repository root, its output teed to ``log`` and to stdout; killed
    after ``timeout`` seconds, even when it has gone silent."""
    print("$ " + " ".join(cmd), flush=True)
    with (
        log.open("w") as f,
        subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        tee = threading.Thread(target=_tee, args=(proc, f), daemon=True)
        tee.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM first: the server step then stops its server
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = TIMED_OUT
        tee.join(timeout=15)  # a grandchild may still hold the pipe open
        if code == TIMED_OUT:
            f.write(f"\n[device-check] killed after {timeout:.0f} s\n")
            print(f"[device-check] killed after {timeout:.0f} s", flush=True)
        return code


def _tee(proc: subprocess.Popen[str], f: TextIO) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        f.write(line)
        sys.stdout.write(line)


def step_device(out: Path, dry: bool, env: dict[str, str]) -> int:
    smi = shutil.which("nvidia-smi")
    lines = [f"python: {sys.version.split()[0]} ({sys.executable})"]
    code = 0
    if smi:
        q = [smi, f"--query-gpu={SMI_FIELDS}", "--format=csv"]
        done = subprocess.run(q, capture_output=True, text=True, timeout=60)
        lines += [done.stdout.strip(), done.stderr.strip()]
        code = done.returncode
    else:
        lines.append("nvidia-smi: not found" + (" (dry run on the CPU)" if dry else ""))
        code = 0 if dry else 1
    probe = "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, "
    probe += "'available', torch.cuda.is_available())"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    lines.append((done.stdout + done.stderr).strip())
    (out / "device.txt").write_text("\n".join(line for line in lines if line) + "\n")
    print((out / "device.txt").read_text(), flush=True)
    return code


def step_wheels(out: Path, dry: bool, env: dict[str, str]) -> int:
    wheels = sorted((ROOT / ".whl").glob("*.whl"))
    log = out / "wheels.log"
    if not wheels or dry:
        why = "dry run" if dry else "no .whl/ folder (scripts/device-wheels.sh makes it)"
        log.write_text(f"not installed ({why}): {[w.name for w in wheels]}\n")
        print(log.read_text(), flush=True)
        return 0
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    return _call([*cmd, "--target", str(SITE), *map(str, wheels)], log, env, 120)


def step_gpu_tests(out: Path, dry: bool, env: dict[str, str]) -> int:
    cmd = [sys.executable, "-m", "pytest", "tests", "-k", GPU_TESTS, "-q", "-rs"]
    cmd += ["-p", "no:cacheprovider", "--timeout", "60", "--junitxml", str(out / "gpu-tests.xml")]
    return _call(cmd, out / "gpu-tests.log", env, LIMIT_S["gpu-tests"])


def step_kernels(out: Path, dry: bool, env: dict[str, str]) -> int:
    cmd = [sys.executable, "-m", "benchmarks.kernels.run"]
    cmd += ["--device", "cuda"] + (["--emulate", "--tiny", "--quick"] if dry else [])
    return _call(cmd, out / "kernels.log", env, LIMIT_S["kernels"])


def step_server(out: Path, dry: bool, env: dict[str, str]) -> int:
    cmd = [sys.executable, str(ROOT / "scripts" / "device_check_server.py"), "--out", str(out)]
    cmd += ["--device", "cpu", "--duration", "0.3", "--warmup", "0.1"] if dry else []
    return _call(cmd, out / "server.log", env, LIMIT_S["server"])


STEPS = [
    Step("device", "device.txt", step_device),
    Step("wheels", "wheels.log", step_wheels),
    Step("gpu-tests", "gpu-tests.xml", step_gpu_tests),
    Step("kernels", "kernels.log", step_kernels),
    Step("server", "server.md", step_server),
]


def _environment(out: Path, dry: bool) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(SITE)] if SITE.is_dir() or (ROOT / ".whl").is_dir() else []
    paths += [str(ROOT / "src"), str(ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    if dry:
        env["ACCELSERVE_PERFORMANCE_MD"] = str(out / "PERFORMANCE.md")
        env["ACCELSERVE_RESULTS_DIR"] = str(out / "results")
        env["TRITON_INTERPRET"] = "1"
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    return env


def _collect(out: Path) -> None:
    """A real run wrote the repository's own files: copy them where the lease brings back."""
    results = out / "results"
    results.mkdir(exist_ok=True)
    for path in (ROOT / "benchmarks" / "results").glob("bench_*"):
        if path.name.startswith(("bench_kernels", "bench_device_server")):
            shutil.copy2(path, results / path.name)
    shutil.copy2(ROOT / "docs" / "PERFORMANCE.md", out / "PERFORMANCE.md")


def main(steps: Sequence[Step] = STEPS) -> int:
    dry = os.environ.get("DRY_RUN", "") not in ("", "0")
    out = Path(os.environ.get("OUT") or ROOT / "device-check-out").resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = _environment(out, dry)
    sys.path[:0] = [p for p in env["PYTHONPATH"].split(os.pathsep) if p]
    print(f"[device-check] {'DRY RUN on the CPU' if dry else 'CUDA'}; output in {out}")
    if dry and (ROOT / "docs" / "PERFORMANCE.md").exists():  # the blocks land in a copy
        shutil.copy2(ROOT / "docs" / "PERFORMANCE.md", out / "PERFORMANCE.md")
    rows, total = [], time.perf_counter()
    for step in steps:
        print(f"\n[device-check] === {step.name} ===", flush=True)
        start = time.perf_counter()
        try:
            code = step.run(out, dry, env)
        except Exception as exc:  # a broken step is recorded; the next one still runs
            print(f"[device-check] {step.name} raised {exc!r}", flush=True)
            code = -1
        seconds = time.perf_counter() - start
        if code == 0 and not (out / step.output).exists():
            code = -2  # claimed success without its file
        status = "ok" if code == 0 else f"FAILED ({'timed out' if code == TIMED_OUT else code})"
        rows.append(f"| {step.name} | {status} | {seconds:.1f} | {step.output} |")
        print(f"[device-check] {step.name}: {status} in {seconds:.1f} s", flush=True)
    if not dry:
        try:
            _collect(out)
        except OSError as exc:
            rows.append(f"| collect | FAILED ({exc}) | | |")
    summary = ["| step | status | seconds | file |", "|---|---|---|---|", *rows]
    summary.append(f"\nTotal {time.perf_counter() - total:.1f} s; dry run: {dry}.")
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n" + "\n".join(summary), flush=True)
    return 1 if any("FAILED" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
