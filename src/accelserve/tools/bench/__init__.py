"""accelserve's load generator (``accelserve bench``): drives any KServe V2 server (accelserve,
Triton) over HTTP or gRPC and reports throughput, latency percentiles and the server's own
breakdown from ``/stats``.

Names are loaded on first use, so that building the ``accelserve`` command line (which imports
``accelserve.tools.bench.cli``) does not import numpy, httptools, grpc or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accelserve.tools.bench.bench import BenchOutcome, BenchSettings, bench, run_bench
    from accelserve.tools.bench.runner import StepResult
    from accelserve.tools.bench.sweep import LatencySummary, parse_sweep, percentile

_EXPORTS = {
    "BenchOutcome": "bench",
    "BenchSettings": "bench",
    "bench": "bench",
    "run_bench": "bench",
    "StepResult": "runner",
    "LatencySummary": "sweep",
    "parse_sweep": "sweep",
    "percentile": "sweep",
}

__all__ = [
    "BenchOutcome",
    "BenchSettings",
    "LatencySummary",
    "StepResult",
    "bench",
    "parse_sweep",
    "percentile",
    "run_bench",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'accelserve.tools.bench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"accelserve.tools.bench.{module}"), name)
