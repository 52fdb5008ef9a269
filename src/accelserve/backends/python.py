"""Python backend: a user's ``model.py`` run in its own worker process.

``model.py`` defines a class (``Model`` unless the ``python_class`` parameter names another)::

    class Model:
        def initialize(self, config: dict, device: str) -> None: ...   # optional
        def execute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...
        def finalize(self) -> None: ...                                  # optional

``config`` is the model config in Triton's JSON form; ``device`` is the instance's device
(``"cpu:0"``, ``"cuda:1"``...). The worker is a separate process, so user code cannot take the
server down: an exception fails that batch with the exception's type and message; a process
exit or a hang past ``execute_timeout_s`` (default 30) fails that batch, and the worker is
killed and started again at once for the next batch. ``initialize_timeout_s`` (default 120)
bounds start-up. Arrays travel over a socket as pickle protocol 5 out-of-band buffers.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.backends import python_worker
from accelserve.backends.base import Backend
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError, ServerFaultError
from accelserve.protocol.model_config_pb2 import ModelConfig

DEFAULT_CLASS = "Model"
DEFAULT_EXECUTE_TIMEOUT_S = 30.0
DEFAULT_INITIALIZE_TIMEOUT_S = 120.0
FINALIZE_TIMEOUT_S = 10.0


class _Failure(Exception):
    """Why the worker gave no reply: ``what`` completes "the worker process ..."."""

    def __init__(self, what: str, timed_out: bool = False) -> None:
        super().__init__(what)
        self.what = what
        self.timed_out = timed_out


class _UserError(Exception):
    def __init__(self, type_name: str, message: str) -> None:
        # User messages can name files on the server: hide absolute paths from clients.
        message = re.sub(r"(/[\w.\-]+){2,}", "<path>", message)
        super().__init__(f"{type_name}: {message}" if message else type_name)


class _Worker:
    """One worker process and the parent's end of its connection."""

    def __init__(self, init: dict[str, Any]) -> None:
        self.process, self.conn = python_worker.spawn("accelserve.backends.python_worker")
        self.initialized = False
        self._finalizer = weakref.finalize(self, python_worker.kill, self.process, self.conn)
        with contextlib.suppress(OSError):  # if it died already, the wait for init says how
            python_worker.send(self.conn, "init", init)

    def request(self, kind: str | None, payload: Any, timeout: float) -> Any:
        """Send one message (none: just wait) and wait for the reply; raises _UserError or
        _Failure."""
        try:
            if kind is not None:
                python_worker.send(self.conn, kind, payload)
            if not self.conn.poll(timeout):
                self.kill()
                raise _Failure(f"did not answer within {timeout:g} s and was killed", True)
            status, value = python_worker.recv(self.conn)
        except (EOFError, OSError):
            raise _Failure(self._exit_reason()) from None
        if status == "error":
            raise _UserError(*value)
        return value

    def _exit_reason(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return "closed its connection and was killed"
        if code < 0:
            try:
                return f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def kill(self) -> None:
        self._finalizer()


class PythonBackend(Backend):
    default_filename = "model.py"
    inline_ok = False  # a call waits on the worker process, which may hang

    def load(self, version_dir: Path, config: ModelConfig, device: Device) -> None:
        from accelserve.config import config_to_json, seconds_parameter

        self._where = where = f"model '{config.name}' version {version_dir.name}"
        path = self.model_file(version_dir, config)
        filename = path.name
        params = {k: v.string_value for k, v in config.parameters.items()}
        self._execute_timeout = seconds_parameter(
            where, "execute_timeout_s", params.get("execute_timeout_s"), DEFAULT_EXECUTE_TIMEOUT_S
        )
        self._init_timeout = seconds_parameter(
            where,
            "initialize_timeout_s",
            params.get("initialize_timeout_s"),
            DEFAULT_INITIALIZE_TIMEOUT_S,
        )
        self._init = {
            "path": str(path.resolve()),
            "class_name": params.get("python_class") or DEFAULT_CLASS,
            "config": config_to_json(config),
            "device": str(device),
        }
        self._config = config
        self._lock = threading.Lock()
        self._unloaded = False
        self.device = device
        self._worker: _Worker | None = _Worker(self._init)
        try:
            self._ready(self._worker)
        except (_UserError, _Failure) as exc:
            self._stop_worker()
            raise ConfigError(f"{where}: {filename} failed to start: {_reason(exc)}") from None

    def _ready(self, worker: _Worker) -> None:
        if not worker.initialized:
            worker.request(None, None, self._init_timeout)  # the reply to "init"
            worker.initialized = True

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:
            if self._unloaded:
                raise ServerFaultError(f"{self._where}: the model is unloaded")
            worker = self._worker or _Worker(self._init)
            self._worker = worker
            try:
                self._ready(worker)
            except (_UserError, _Failure) as exc:
                self._stop_worker()  # the next batch starts a fresh worker
                raise ServerFaultError(
                    f"{self._where}: the restarted model failed to start: {_reason(exc)}"
                ) from None
            try:
                outputs: dict[str, np.ndarray] = worker.request(
                    "execute", inputs, self._execute_timeout
                )
            except _UserError as exc:
                raise ModelExecutionError(f"{self._where}: execute() raised {exc}") from None
            except _Failure as exc:
                # Start the replacement now so it initializes while this error goes out.
                self._stop_worker()
                self._worker = _Worker(self._init)
                if exc.timed_out:
                    message = (
                        f"execute() did not return within {self._execute_timeout:g} s "
                        "(parameter execute_timeout_s); its worker process was killed and "
                        "restarted"
                    )
                else:
                    message = (
                        f"the model's worker process {exc.what} during execute(); it has been "
                        "restarted"
                    )
                # A batch that ran past the timeout is not run again in parts (isolation):
                # each part could hang as long. A crash may be one request's data: it is.
                fault = ServerFaultError if exc.timed_out else ModelExecutionError
                raise fault(f"{self._where}: {message}") from None
        missing = [o.name for o in self._config.output if o.name not in outputs]
        if missing:
            raise ModelExecutionError(
                f"{self._where}: execute() returned outputs {sorted(outputs)}; the config also "
                f"declares {missing}"
            )
        return outputs

    def unload(self) -> None:
        with self._lock:
            worker = self._worker
            if worker is not None and worker.initialized:
                try:
                    worker.request("finalize", None, FINALIZE_TIMEOUT_S)
                    worker.process.wait(timeout=FINALIZE_TIMEOUT_S)
                except (_UserError, _Failure, subprocess.TimeoutExpired):
                    pass  # unloading anyway: the worker is killed below
            self._stop_worker()
            self._unloaded = True

    def _stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.kill()
            self._worker = None

    @property
    def worker_pid(self) -> int | None:
        """The worker process's id (None between a failure and the next batch)."""
        return self._worker.process.pid if self._worker is not None else None


def _reason(exc: Exception) -> str:
    return f"the worker process {exc.what}" if isinstance(exc, _Failure) else str(exc)
