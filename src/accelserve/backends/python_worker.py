"""The Python backend's worker process, and the message framing both sides use.

``python -m accelserve.backends.python_worker FD`` runs one user model: it reads an ``init``
message on the connection ``FD`` (a socket inherited from the server), imports ``model.py``,
calls ``initialize(config, device)``, then answers ``execute`` messages one at a time until
``finalize`` or until the server goes away. Every reply is ``("ok", value)`` or
``("error", (exception type name, message))``; tracebacks go to this process's stderr (the
server's log), never into a reply.

Framing: a message is pickled with protocol 5 and its NumPy buffers travel out of band, each
as its own frame received straight into a writable buffer, so arrays are not copied into the
pickle and arrive writable.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
import traceback
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import numpy as np

MAX_MESSAGE_CHARS = 1000  # a user exception's message is cut here in replies
_SRC_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding `accelserve`


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        # NumPy's own reduction keeps a read-only array read-only on the other side; arrays
        # arrive in private buffers, so hand them over writable (models may work in place).
        if type(obj) is np.ndarray and not obj.dtype.hasobject and obj.flags.c_contiguous:
            return _array, (pickle.PickleBuffer(cast(Any, obj)), obj.dtype, obj.shape)
        return NotImplemented


def _array(buffer: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    view = memoryview(buffer)
    if view.readonly and isinstance(view.obj, bytearray):
        buffer = view.obj  # the private bytearray recv() filled
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def send(conn: Connection, kind: str, payload: Any) -> None:
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _Pickler(stream, protocol=5, buffer_callback=buffers.append).dump((kind, payload))
    body = stream.getbuffer()
    raws = [b.raw() for b in buffers]
    conn.send_bytes(struct.pack(f"<I{len(raws)}Q", len(raws), *(r.nbytes for r in raws)) + body)
    for raw in raws:
        conn.send_bytes(raw)


def recv(conn: Connection) -> tuple[str, Any]:
    first = conn.recv_bytes()
    (count,) = struct.unpack_from("<I", first)
    sizes = struct.unpack_from(f"<{count}Q", first, 4)
    buffers = []
    for size in sizes:
        buffer = bytearray(size)
        if size:
            conn.recv_bytes_into(buffer)
        else:
            conn.recv_bytes()
        buffers.append(buffer)
    kind, payload = pickle.loads(memoryview(first)[4 + 8 * count :], buffers=buffers)
    return str(kind), payload


def spawn(module: str) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start ``python -m module FD`` with the child's end of a socket pair as ``FD`` (this
    source tree first on its path); the process and the parent's end."""
    parent, child = Pipe()  # a socket pair on POSIX
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_ROOT, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-m", module, str(child.fileno())], pass_fds=(child.fileno(),), env=env
    )
    child.close()
    return process, parent


def kill(process: subprocess.Popen[bytes], conn: Connection) -> None:
    """Kill a worker (if it still runs), reap it, close the parent's end."""
    if process.poll() is None:
        process.kill()
        process.wait()
    conn.close()


def describe(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, str(exc)[:MAX_MESSAGE_CHARS]


def load_model(path: str, class_name: str) -> Any:
    """Import ``path`` as a module and instantiate its ``class_name``."""
    model = load_model_class(path, class_name)()
    if not callable(getattr(model, "execute", None)):
        raise AttributeError(f"class {class_name!r} in {Path(path).name} has no execute() method")
    return model


def load_model_class(path: str, class_name: str) -> type:
    """Import ``path`` as a module and return its class ``class_name``."""
    file = Path(path)
    sys.path.insert(0, str(file.parent))  # model.py may import modules beside it
    spec = importlib.util.spec_from_file_location("accelserve_python_model", file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file.name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise AttributeError(f"{file.name} defines no class {class_name!r}")
    return cls


def _outputs(result: Any) -> dict[str, np.ndarray]:
    if not isinstance(result, dict) or not all(isinstance(k, str) for k in result):
        raise TypeError(
            "execute() must return a dict of output name -> numpy array; it returned "
            f"{type(result).__name__}"
        )
    return {name: np.asarray(value) for name, value in result.items()}


def _exit_when_orphaned() -> None:
    # A hung execute() never reads EOF from a dead server: watch for being re-parented.
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def watch_parent() -> None:
    """Exit this worker when the server that started it is gone."""
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()


def main(fd: int) -> None:
    conn = Connection(fd)
    watch_parent()
    _, init = recv(conn)
    try:
        model = load_model(init["path"], init["class_name"])
        if callable(getattr(model, "initialize", None)):
            model.initialize(init["config"], init["device"])
    except Exception as exc:
        traceback.print_exc()
        send(conn, "error", describe(exc))
        return
    send(conn, "ok", None)
    while True:
        try:
            kind, payload = recv(conn)
        except (EOFError, OSError):  # the server is gone
            return
        try:
            if kind == "finalize":
                if callable(getattr(model, "finalize", None)):
                    model.finalize()
                send(conn, "ok", None)
                return
            send(conn, "ok", _outputs(model.execute(payload)))
        except Exception as exc:
            traceback.print_exc()
            send(conn, "error", describe(exc))


if __name__ == "__main__":
    # Run the imported module's main, so pickled references name this module by its real
    # name (accelserve.backends.python_worker), not __main__.
    from accelserve.backends.python_worker import main as worker_main

    worker_main(int(sys.argv[1]))
