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
    kind: str  # "onnx", "torch" or "tf"
    model_dir: Path
    source: Path  # the served version's model file
    device: Any = None  # accelserve.devices.Device; None: cpu

    @property
    def gpu(self) -> bool:
        return self.device is not None and self.device.kind == "cuda"

    def kinds(self, text: str) -> list[Spec]:
        """The candidates named in ``text`` (empty: all that apply); the GPU ones only on a
        ``cuda`` device, where asking for them elsewhere is an error naming the device."""
        from accelserve.tools.optimize.gpu_candidates import ONNX_GPU_SPECS, TORCH_GPU_SPECS

        gpu_specs = {"onnx": ONNX_GPU_SPECS, "torch": TORCH_GPU_SPECS}.get(self.kind, {})
        if self.kind == "torch" and self.source.suffix != ".pt2":
            gpu_specs = {}  # compiling needs a torch.export program
        names = [t.strip() for t in text.split(",") if t.strip()]
        wanted_gpu = [n for n in names if n in ONNX_GPU_SPECS or n in TORCH_GPU_SPECS]
        if wanted_gpu and not self.gpu:
            raise ValueError(
                f"--candidates: {', '.join(wanted_gpu)} run on a GPU; expected --device cuda:N, "
                f"received {self.device or 'cpu'}"
            )
        rest = ",".join(n for n in names if n not in gpu_specs)
        if self.kind == "torch":
            from accelserve.tools.optimize.torch_candidates import torch_kinds

            base = torch_kinds(rest, self.source) if rest or not names else []
        elif self.kind == "tf":
            from accelserve.tools.optimize.tf_candidates import tf_kinds

            base = tf_kinds(rest, self.source) if rest or not names else []
        else:
            base = parse_kinds(rest) if rest or not names else []
        if not self.gpu:
            return base
        return base + [gpu_specs[n] for n in (names or gpu_specs) if n in gpu_specs]

    def build(
        self, spec: Spec, workdir: Path, calibration: Samples, exclude: Sequence[str] = ()
    ) -> Built:
        if self.kind in ("torch", "tf"):
            from accelserve.tools.optimize.torch_candidates import build_torch

            return build_torch(spec, self.source, workdir, calibration, exclude)
        return build(spec, self.source, workdir, calibration, exclude)

    def runner(self, path: Path, overlay: str = "") -> RunFn:
        """A runner of ``path`` (a candidate's file, or the source) with ``overlay``: through
        the backend on the device (ONNX on CPU: a plain CPU session, the same numbers)."""
        if self.kind != "onnx" or self.gpu:
            return BackendRunner(self.model_dir, path, overlay, self.device)
        return Runner(path)


class BackendRunner:
    """One model file loaded by its backend with the model's config and a candidate's
    overlay, on ``device`` (default cpu), for reference and accuracy runs."""

    def __init__(self, model_dir: Path, path: Path, overlay: str = "", device: Any = None) -> None:
        from accelserve.config import merge_overlay, parse_config, read_config
        from accelserve.devices import parse_device
        from accelserve.repository import load_backend

        config = read_config(model_dir)
        config.ClearField("version_policy")
        merge_overlay(config, parse_config(overlay, "candidate overlay"), "candidate overlay")
        self.backend = load_backend(path.parent, config, device or parse_device("cpu"))
        self.inputs = [i.name for i in config.input]

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.backend.infer({k: v for k, v in tensors.items() if k in self.inputs})

    def close(self) -> None:
        self.backend.unload()


def family_of(model_dir: Path, platform: str, source: Path, device: Any = None) -> Family:
    """The family of a model of ``platform`` whose served file is ``source`` (both checked by
    ``optimize.check_backend``)."""
    from accelserve.tools.optimize.tf_candidates import TF_PLATFORMS
    from accelserve.tools.optimize.torch_candidates import TORCH_PLATFORMS

    kind = "torch" if platform in TORCH_PLATFORMS else "tf" if platform in TF_PLATFORMS else "onnx"
    return Family(kind, model_dir, source, device)
