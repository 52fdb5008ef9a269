"""Which candidates a model gets, by its backend (and device): ONNX (``candidates.py``, with
the GPU ones in ``gpu_candidates.py`` on a ``cuda`` device) or PyTorch
(``torch_candidates.py``). A family builds a candidate and runs a model file with the
candidate's config overlay for the accuracy checks; the loop in ``optimize.py`` is the same."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.tools.optimize.candidates import Built, Runner, Samples, Spec, build, parse_kinds

RunFn = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Family:
    kind: str  # "onnx" or "torch"
    model_dir: Path
    source: Path  # the served version's model file

    def kinds(self, text: str) -> list[Spec]:
        if self.kind == "torch":
            from accelserve.tools.optimize.torch_candidates import torch_kinds

            return torch_kinds(text, self.source)
        return parse_kinds(text)

    def build(
        self, spec: Spec, workdir: Path, calibration: Samples, exclude: Sequence[str] = ()
    ) -> Built:
        if self.kind == "torch":
            from accelserve.tools.optimize.torch_candidates import build_torch

            return build_torch(spec, self.source, workdir, calibration, exclude)
        return build(spec, self.source, workdir, calibration, exclude)

    def runner(self, path: Path, overlay: str = "") -> RunFn:
        """A CPU runner of ``path`` (a candidate's file, or the source) with ``overlay``."""
        if self.kind == "torch":
            from accelserve.tools.optimize.torch_candidates import TorchRunner

            return TorchRunner(self.model_dir, path, overlay)
        return Runner(path)


def family_of(model_dir: Path, config: Any, source: Path) -> Family:
    """The family of a model whose served file is ``source`` (checked by ``check_backend``)."""
    from accelserve.tools.optimize.torch_candidates import TORCH_PLATFORMS

    kind = config.platform or config.backend
    torch = kind in (*TORCH_PLATFORMS, "pytorch") or (not kind and source.suffix in (".pt", ".pt2"))
    return Family("torch" if torch else "onnx", model_dir, source)
