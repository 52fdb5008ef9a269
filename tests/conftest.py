"""Fixtures shared by every test: free ports and real server processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "model_repository"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A real `accelserve serve` process on free ports."""

    def __init__(self, repository: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.metrics_port = free_port()
        self.url = f"127.0.0.1:{self.http_port}"
        self.base = f"http://{self.url}"
        self.log_path = repository.parent / f"server-{self.http_port}.log"
        command = [
            sys.executable,
            "-m",
            "accelserve.cli",
            "serve",
            "--model-repository",
            str(repository),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--log-level",
            "warning",
            *args,
        ]
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.output()
                self.log.close()
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{output}")
            try:
                if httpx.get(f"{self.base}/v2/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


def copy_example(name: str, destination: Path) -> Path:
    """Copy an example model's config into ``destination`` and build its files."""
    from accelserve.tools.examples.build import BUILDERS

    target = destination / name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / name / "config.pbtxt", target / "config.pbtxt")
    BUILDERS[name](target)
    return target


@pytest.fixture(scope="session")
def simple_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`simple`, plus `simple_auto` (the same ONNX file with no config.pbtxt, so the config is
    completed from the model) and `broken` (a config whose model file is missing)."""
    repository = tmp_path_factory.mktemp("repo") / "models"
    simple = copy_example("simple", repository)
    auto = repository / "simple_auto" / "1"
    auto.mkdir(parents=True)
    shutil.copy(simple / "1" / "model.onnx", auto / "model.onnx")
    broken = repository / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('platform: "onnxruntime_onnx"\nmax_batch_size: 4\n')
    return repository


@pytest.fixture(scope="session")
def server(simple_repository: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(simple_repository)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def tf_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SavedModels of ``tests/tf_builders.py``, built once per session (TensorFlow is
    imported only by the tests that ask for them)."""
    from tests.tf_builders import build_all

    return build_all(tmp_path_factory.mktemp("tf_models"))
