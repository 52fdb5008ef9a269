"""Python backend: user model.py in a worker process; crashes and hangs fail only that batch."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from backend_helpers import config, params, version_dir

from accelserve.backends.python import PythonBackend
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError

CPU = Device("cpu", 0)

# x[0, 0] picks a behaviour: -1 raises, -2 exits, -3 hangs, -4 is killed; else it computes.
MODEL = textwrap.dedent(
    """
    import os
    import signal
    import threading

    import numpy as np
    from helper import OFFSET  # a module beside model.py


    class Model:
        def initialize(self, config, device):
            self.scale = float(config["parameters"]["scale"]["string_value"])
            self.device = device
            self.name = config["name"]

        def execute(self, batch):
            x = batch["x"]
            code = int(x.flat[0])
            if code == -1:
                raise ValueError("x[0, 0] must not be -1")
            if code == -2:
                os._exit(3)
            if code == -3:
                threading.Event().wait()  # never set: hangs until the backend kills it
            if code == -4:
                os.kill(os.getpid(), signal.SIGKILL)
            x *= self.scale  # inputs arrive writable
            return {
                "y": x + OFFSET,
                "info": np.array([self.name.encode(), self.device.encode()], dtype=object),
                "pid": np.array([os.getpid()]),
            }

        def finalize(self):
            marker = os.environ.get("MARKER_DIR")
            if marker:
                open(os.path.join(marker, "finalized"), "w").close()
    """
)

CONFIG = """
backend: "python"
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [3] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [3] },
        { name: "info" data_type: TYPE_STRING dims: [2] },
        { name: "pid" data_type: TYPE_INT64 dims: [1] }]
""" + params(scale="2", execute_timeout_s="1")


def _write(root: Path, name: str, source: str) -> Path:
    directory = version_dir(root, name)
    (directory / "model.py").write_text(source)
    (directory / "helper.py").write_text("OFFSET = 0.5\n")
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("python_models"), "pymodel", MODEL)


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> Iterator[PythonBackend]:
    instance = PythonBackend()
    instance.load(model_dir, config(CONFIG, "pymodel"), CPU)
    yield instance
    instance.unload()


def _run(backend: PythonBackend, first: float) -> dict[str, np.ndarray]:
    x = np.array([[first, 1, 2], [3, 4, 5]], np.float32)
    x.setflags(write=False)  # read-only here, writable in the worker
    return backend.infer({"x": x})


def test_computes_in_a_separate_process(backend: PythonBackend) -> None:
    out = _run(backend, 0.0)
    expected = np.array([[0, 1, 2], [3, 4, 5]], np.float32) * 2 + 0.5
    np.testing.assert_array_equal(out["y"], expected)
    assert out["y"].dtype == np.float32
    assert out["info"].tolist() == [b"pymodel", b"cpu:0"]
    assert int(out["pid"][0]) == backend.worker_pid != os.getpid()


def test_large_batches_round_trip(backend: PythonBackend) -> None:
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32) + 5
    big = np.broadcast_to(x, (4096, 8, 3)).reshape(-1, 3)  # 384 KiB
    out = backend.infer({"x": big})
    np.testing.assert_array_equal(out["y"], big * 2 + 0.5)


def test_an_exception_fails_only_that_batch(backend: PythonBackend) -> None:
    pid = backend.worker_pid
    with pytest.raises(ModelExecutionError) as info:
        _run(backend, -1.0)
    assert str(info.value) == (
        "model 'pymodel' version 1: execute() raised ValueError: x[0, 0] must not be -1"
    )
    assert "Traceback" not in str(info.value)
    assert int(_run(backend, 1.0)["pid"][0]) == pid  # same worker, still serving


def test_a_process_exit_restarts_the_worker(backend: PythonBackend) -> None:
    pid = backend.worker_pid
    with pytest.raises(ModelExecutionError, match=r"worker process exited with code 3 during "):
        _run(backend, -2.0)
    out = _run(backend, 1.0)
    assert int(out["pid"][0]) != pid
    np.testing.assert_array_equal(out["y"][1], [6.5, 8.5, 10.5])


def test_a_signal_death_restarts_the_worker(backend: PythonBackend) -> None:
    with pytest.raises(ModelExecutionError, match=r"worker process was killed by signal SIGKILL"):
        _run(backend, -4.0)
    assert _run(backend, 1.0)["y"].shape == (2, 3)


def test_a_hang_past_the_timeout_restarts_the_worker(backend: PythonBackend) -> None:
    pid = backend.worker_pid
    with pytest.raises(
        ModelExecutionError,
        match=r"execute\(\) did not return within 1 s \(parameter execute_timeout_s\); its "
        r"worker process was killed and restarted",
    ):
        _run(backend, -3.0)  # returns only because the worker was killed: it never would
    out = _run(backend, 1.0)
    assert int(out["pid"][0]) != pid


def test_a_crash_in_one_model_leaves_another_serving(
    backend: PythonBackend, model_dir: Path
) -> None:
    other = PythonBackend()
    other.load(model_dir, config(CONFIG, "other"), CPU)
    try:
        with pytest.raises(ModelExecutionError, match=r"exited with code 3"):
            _run(backend, -2.0)
        assert _run(other, 1.0)["info"][0] == b"other"
    finally:
        other.unload()


def test_unload_calls_finalize(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MARKER_DIR", str(tmp_path))  # inherited by the worker
    instance = PythonBackend()
    instance.load(model_dir, config(CONFIG, "fin"), CPU)
    instance.unload()
    assert (tmp_path / "finalized").exists()
    assert instance.worker_pid is None
    with pytest.raises(
        ModelExecutionError, match=r"^model 'fin' version 1: the model is unloaded$"
    ):
        _run(instance, 1.0)


def test_missing_declared_output_fails_the_batch(tmp_path: Path) -> None:
    source = "class Model:\n    def execute(self, batch):\n        return {'y': batch['x']}\n"
    directory = _write(tmp_path, "partial", source)
    instance = PythonBackend()
    instance.load(directory, config(CONFIG, "partial"), CPU)
    try:
        with pytest.raises(
            ModelExecutionError,
            match=r"returned outputs \['y'\]; the config also declares \['info', 'pid'\]",
        ):
            _run(instance, 1.0)
    finally:
        instance.unload()


@pytest.mark.parametrize(
    ("source", "text", "expected"),
    [
        (None, "", r"^model 'bad' version 1: expected file 'model.py' is missing$"),
        (
            "x = 1\n",
            "",
            r"model.py failed to start: AttributeError: model.py defines no class 'Model'",
        ),
        ("def broken(:\n", "", r"model.py failed to start: SyntaxError: "),
        (
            "class Custom:\n    def initialize(self, config, device):\n"
            "        raise RuntimeError('no weights')\n    def execute(self, b):\n        return b\n",
            params(python_class="Custom"),
            r"^model 'bad' version 1: model.py failed to start: RuntimeError: no weights$",
        ),
        ("import os\nos._exit(7)\n", "", r"failed to start: the worker process exited with code 7"),
        ("class Model:\n    pass\n", "", r"class 'Model' in model.py has no execute\(\) method"),
        (
            "",
            params(execute_timeout_s="soon"),
            r"'execute_timeout_s': expected seconds > 0; received 'soon'",
        ),
    ],
)
def test_misconfiguration_is_a_clear_error(
    tmp_path: Path, source: str | None, text: str, expected: str
) -> None:
    directory = version_dir(tmp_path, "bad")
    if source is not None:
        (directory / "model.py").write_text(source)
    with pytest.raises(ConfigError, match=expected) as info:
        PythonBackend().load(directory, config(text, "bad"), CPU)
    assert "Traceback" not in str(info.value) and str(tmp_path) not in str(info.value)
