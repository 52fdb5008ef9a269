"""Test utilities for kernel providers: tolerances, comparison with NaN/Inf parity, inputs,
and a worker process that runs the Triton kernels under Triton's CPU interpreter.

``TRITON_INTERPRET`` is read when triton decorates a kernel, so a process either compiles or
interprets its kernels. ``InterpreterWorker`` keeps the interpreter in a child process of its
own: the test process stays free to compile real GPU kernels, and its other tests never see
the variable.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import ml_dtypes
import numpy as np

from accelserve import errors

# (atol, rtol) per output dtype: about two units in the last place, plus float32 accumulation.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-9, 1e-9),
    "float32": (1e-4, 1e-4),
    "float16": (2e-3, 2e-3),
    "bfloat16": (1e-2, 1.6e-2),
}
DTYPES = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


def tolerance(dtype: str) -> tuple[float, float]:
    return TOLERANCES[dtype]


def random_array(
    shape: tuple[int, ...], dtype: str, seed: int = 0, scale: float = 1.0
) -> np.ndarray:
    """Standard-normal values rounded to ``dtype`` (a NumPy array; bf16 via ml_dtypes)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(DTYPES[dtype])


def with_specials(x: np.ndarray, seed: int = 1) -> np.ndarray:
    """A copy of ``x`` with a NaN, a +Inf and a -Inf at random positions (when it has room)."""
    out = x.copy()
    flat = out.reshape(-1)
    picks = np.random.default_rng(seed).permutation(flat.size)[:3]
    for index, value in zip(picks, (np.nan, np.inf, -np.inf), strict=False):
        flat[index] = value
    return out


def _as_float64(x: Any) -> np.ndarray:
    from accelserve.kernels._arrays import to_numpy

    return np.asarray(to_numpy(x), dtype=np.float64)


def assert_close(
    actual: Any,
    expected: Any,
    atol: float,
    rtol: float,
    name: str = "result",
    max_report: int = 8,
) -> None:
    """``actual`` matches ``expected``: same shape, NaN and ±Inf in the same places, finite
    values within ``atol + rtol * |expected|``. On failure the message lists the first
    mismatches with their index, both values and the allowed error."""
    a, e = _as_float64(actual), _as_float64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape}, expected {e.shape}")
    bad = np.isnan(a) != np.isnan(e)
    bad |= np.isposinf(a) != np.isposinf(e)
    bad |= np.isneginf(a) != np.isneginf(e)
    finite = np.isfinite(a) & np.isfinite(e)
    allowed = atol + rtol * np.abs(e)
    with np.errstate(invalid="ignore"):
        bad |= finite & ~(np.abs(a - e) <= allowed)
    if not bad.any():
        return
    lines = [f"{name}: {int(bad.sum())} of {a.size} elements differ (atol={atol}, rtol={rtol})"]
    for index in np.argwhere(bad)[:max_report]:
        i = tuple(int(v) for v in index)
        lines.append(
            f"  at {i}: actual {a[i]!r}, expected {e[i]!r}, "
            f"|diff| {abs(a[i] - e[i])!r}, allowed {allowed[i]!r}"
        )
    raise AssertionError("\n".join(lines))


# ---- Triton interpreter worker --------------------------------------------------------------


def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("worker closed its pipe")
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


class InterpreterWorker:
    """A child process with ``TRITON_INTERPRET=1`` that runs kernel calls sent to it.

    ``call(op, *arrays, **kwargs)`` sends NumPy arrays; the child turns them into torch CPU
    tensors (or passes them as NumPy with ``as_torch=False``), calls ``accelserve.kernels.<op>``
    and answers ``(result as NumPy, provider it resolved)``. Errors raised by accelserve come
    back as the same class.
    """

    def __init__(self) -> None:
        env = dict(os.environ, TRITON_INTERPRET="1")
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the worker)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from accelserve.kernels.testing import _serve; _serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )

    def call(
        self, op: str, *arrays: Any, as_torch: bool = True, **kwargs: Any
    ) -> tuple[np.ndarray, str]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        try:
            _send(self._proc.stdin, (op, arrays, kwargs, as_torch))
            status, payload = _receive(self._proc.stdout)
        except (EOFError, BrokenPipeError) as exc:
            raise RuntimeError(f"triton interpreter worker died:\n{self.stderr_tail()}") from exc
        if status == "ok":
            result: tuple[np.ndarray, str] = payload
            return result
        kind, message = payload
        error_class = getattr(errors, kind, None)
        if isinstance(error_class, type) and issubclass(error_class, errors.AccelServeError):
            raise error_class(message)
        raise RuntimeError(f"{kind} in triton interpreter worker: {message}")

    def stderr_tail(self, size: int = 4000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-size:]

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()


def _serve() -> None:
    """The worker's loop (runs in the child process)."""
    import traceback

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints must not corrupt the reply stream
    requests = sys.stdin.buffer

    from accelserve import kernels
    from accelserve.kernels._arrays import to_numpy, to_torch

    while True:
        try:
            op, arrays, kwargs, as_torch = _receive(requests)
        except EOFError:
            return
        try:
            inputs = [to_torch(x) if as_torch and x is not None else x for x in arrays]
            provider = kernels.resolve_provider(
                op, *[x for x in inputs if x is not None], provider=kwargs.get("provider")
            )
            result = getattr(kernels, op)(*inputs, **kwargs)
            _send(replies, ("ok", (to_numpy(result).copy(), provider)))
        except Exception as exc:
            traceback.print_exc()
            _send(replies, ("error", (type(exc).__name__, str(exc))))
