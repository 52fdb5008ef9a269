"""A server whose only model is ONNX imports no deep-learning framework (issue 11 item 7);
one with a TensorFlow model imports TensorFlow and nothing else (issue 13).

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


def _frameworks_when_ready(repository: Path) -> tuple[list[str], list[str]]:
    """Start the server on ``repository``; once ready: the frameworks in its ``sys.modules``
    and the framework libraries mapped into it."""
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
            "--device",
            "cpu",
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
            with open(f"/proc/{process.pid}/maps") as maps:
                libraries = sorted(
                    {lib for ln in maps for lib in ("libtorch", "libtensorflow") if lib in ln}
                )
            return json.loads(report.split(" ", 1)[1]), libraries
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def test_an_onnx_only_server_imports_no_framework(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    copy_example("simple", repository)
    assert _frameworks_when_ready(repository) == ([], [])


def test_a_tensorflow_model_brings_tensorflow_alone(tmp_path: Path, tf_models: Path) -> None:
    """The other side of the check above: the same server with one SavedModel beside the ONNX
    model imports TensorFlow (and maps its library), and still neither torch nor jax."""
    from tests.tf_builders import place

    repository = tmp_path / "models"
    copy_example("simple", repository)
    place(tf_models, "seed", repository, "seed")
    assert _frameworks_when_ready(repository) == (["tensorflow"], ["libtensorflow"])
