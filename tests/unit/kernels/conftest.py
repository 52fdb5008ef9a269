"""Fixtures for the kernel tests.

Triton kernels run under Triton's CPU interpreter in a worker process of their own
(``accelserve.kernels.testing.InterpreterWorker``): the variable that turns the interpreter on
must be set before triton is imported, and setting it here would change the rest of the suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from accelserve import kernels
from accelserve.kernels import _registry
from accelserve.kernels.testing import InterpreterWorker

# Every provider but the ground truth, which each is checked against.
PROVIDERS = tuple(p.name for p in _registry.PROVIDERS if p.name != "reference")

Runner = Callable[..., np.ndarray]


@pytest.fixture(scope="session")
def triton_worker() -> Iterator[InterpreterWorker]:
    if _registry.missing("triton"):
        pytest.skip("torch and triton are needed for the triton provider")
    worker = InterpreterWorker()
    yield worker
    worker.close()


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    missing = _registry.missing(request.param)
    if missing:
        pytest.skip(f"{request.param} needs {', '.join(missing)}")
    return str(request.param)


@pytest.fixture
def run(provider: str, request: pytest.FixtureRequest) -> Runner:
    """``run(op, *numpy_arrays, **kwargs)`` on the parametrized provider, answering NumPy."""
    if provider == "triton":
        worker: InterpreterWorker = request.getfixturevalue("triton_worker")

        def on_triton(op: str, *arrays: Any, **kwargs: Any) -> np.ndarray:
            result, used = worker.call(op, *arrays, provider="triton", **kwargs)
            assert used == "triton"
            return result

        return on_triton

    def direct(op: str, *arrays: Any, **kwargs: Any) -> np.ndarray:
        result = getattr(kernels, op)(*arrays, provider=provider, **kwargs)
        assert isinstance(result, np.ndarray)
        return result

    return direct


def reference(op: str, *arrays: Any, **kwargs: Any) -> np.ndarray:
    result = getattr(kernels, op)(*arrays, provider="reference", **kwargs)
    assert isinstance(result, np.ndarray)
    return result
