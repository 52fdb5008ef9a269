"""A server whose only model is ONNX imports no deep-learning framework (issue 11 item 7).

The server runs as a real process through a small wrapper: ``accelserve.cli.main`` in the main
thread, and a thread that waits for ``/v2/health/ready`` and then prints which of torch, jax and
tensorflow are in ``sys.modules``. No debug route is involved.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import copy_example, free_port

FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow")
WRAPPER = """
import json, sys, threading, time, urllib.request

def report(url):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.05)
    loaded = sorted({m.split(".")[0] for m in list(sys.modules)} & set(FRAMEWORKS))
    print("FRAMEWORKS " + json.dumps(loaded), flush=True)

threading.Thread(target=report, args=(sys.argv[1],), daemon=True).start()
from accelserve.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_an_onnx_only_server_imports_no_framework(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    copy_example("simple", repository)
    http = free_port()
    script = f"FRAMEWORKS = {FRAMEWORKS!r}\n{WRAPPER}"
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            f"http://127.0.0.1:{http}/v2/health/ready",
            "serve",
            "--model-repository",
            str(repository),
            "--http-port",
            str(http),
            "--grpc-port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        try:
            lines = []
            assert process.stdout is not None
            for line in process.stdout:  # until the report (or the server's exit)
                lines.append(line)
                if line.startswith("FRAMEWORKS "):
                    break
            report = next((ln for ln in lines if ln.startswith("FRAMEWORKS ")), None)
            assert report is not None, "".join(lines)
            assert json.loads(report.split(" ", 1)[1]) == []
            with open(f"/proc/{process.pid}/maps") as maps:  # and no framework library is mapped
                assert not [ln for ln in maps if "libtorch" in ln or "libtensorflow" in ln]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
