"""accelserve: deploy trained models onto GPUs, TPUs and CPUs with one device string.

``accelserve.load(path, device=...)`` runs a model in process; ``accelserve.serve(repository)``
starts the server; ``accelserve.export(model, "REPO/NAME", example_inputs=...)`` turns a torch,
TensorFlow, JAX or ONNX model into a checked version of a repository model. Heavy frameworks are imported only when a model needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from accelserve.version import __version__

if TYPE_CHECKING:
    from accelserve.api import LocalEnsemble, LocalModel
    from accelserve.tools.export.api import ExportResult
    from accelserve.tools.optimize.optimize import Result as OptimizeResult

__all__ = ["__version__", "export", "load", "optimize", "serve"]


def load(path: str, device: str = "cpu", version: str = "") -> LocalModel | LocalEnsemble:
    """Load the model directory ``path`` onto ``device`` (``"cpu"``, ``"cuda:0"``,
    ``"/device:GPU:0"``, ``"tpu:0"``...) and return it; ``.infer({name: array})`` runs it."""
    from accelserve.api import load as _load

    return _load(path, device=device, version=version)


def serve(repository: str, **settings: Any) -> None:
    """Start the server on ``repository`` and block until it is stopped (SIGINT/SIGTERM)."""
    from accelserve.server import ServerSettings, run

    run(ServerSettings(model_repository=repository, **settings))


def export(model: Any, target: str, **options: Any) -> ExportResult:
    """Export a torch, TensorFlow, JAX or ONNX model (or a model file) into ``target``
    (``REPO/NAME``) as its next version, write its ``config.pbtxt``, load it with accelserve
    and check it against the original; see ``accelserve.tools.export.api.export``."""
    from accelserve.tools.export.api import export as _export

    return _export(model, target, **options)


def optimize(model: str, **options: Any) -> OptimizeResult:
    """Find the fastest accurate form of the ONNX model ``model`` (``REPO/NAME``) and write it
    as its next version; see ``accelserve.tools.optimize.optimize.optimize``."""
    from accelserve.tools.optimize.optimize import optimize as _optimize

    return _optimize(model, **options)
