"""One small MLP written in each backend's format, with identical weights.

``build(root)`` writes a model repository per backend under ``root`` (``root/<backend>/`` holds
one model, ``mlp_<backend>``) and one repository holding all four (``root/all/``), each model
with the same ``config.pbtxt`` apart from its platform: input ``x`` FP32 [256], output ``y``
FP32 [256], ``max_batch_size`` 64, dynamic batching, one CPU instance.

The network is ``gelu(x W0 + b0) -> gelu(. W1 + b1) -> . W2 + b2`` with widths 256 -> 512 ->
512 -> 256 (0.53 M parameters, 2.1 MB of FP32 weights, about 1 MFLOP per row): the size of
a small served model (a reranker or projection head), small enough that serving overhead and
per-call framework cost show. GELU is the exact (erf) form in every format.

Used by benchmarks/server/bench_backends.py; framework imports stay inside the writers.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

WIDTHS = (256, 512, 512, 256)
ACTIVATIONS = ("gelu", "gelu", None)  # after each linear layer
MAX_BATCH = 64
BACKENDS: dict[str, str] = {  # name -> platform
    "onnx": "onnxruntime_onnx",
    "torch": "accelserve_torch_export",
    "jax": "jax",
    "native": "accelserve_native",
}
INPUT, OUTPUT = "x", "y"

Params = list[tuple[np.ndarray, np.ndarray]]  # (W [K, N], b [N]) per layer


def model_name(backend: str) -> str:
    return f"mlp_{backend}"


def make_params(seed: int = 0) -> Params:
    """Fixed-seed FP32 weights, scaled like a trained layer (unit-variance activations)."""
    rng = np.random.default_rng(seed)
    params = []
    for k, n in itertools.pairwise(WIDTHS):
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        b = (0.1 * rng.standard_normal(n)).astype(np.float32)
        params.append((w, b))
    return params


def reference(x: np.ndarray, params: Params) -> np.ndarray:
    """The network in float64 NumPy (exact GELU through scipy's erf): the ground truth."""
    from scipy.special import erf

    y = x.astype(np.float64)
    for (w, b), act in zip(params, ACTIVATIONS, strict=True):
        y = y @ w.astype(np.float64) + b
        if act == "gelu":
            y = 0.5 * y * (1.0 + erf(y / np.sqrt(2.0)))
    return y


def config_text(backend: str) -> str:
    return f"""name: "{model_name(backend)}"
platform: "{BACKENDS[backend]}"
max_batch_size: {MAX_BATCH}
input [ {{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ {WIDTHS[0]} ] }} ]
output [ {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ {WIDTHS[-1]} ] }} ]
dynamic_batching {{ }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""


def _torch_module(params: Params) -> object:
    import torch

    class Mlp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList()
            for w, b in params:
                layer = torch.nn.Linear(w.shape[0], w.shape[1])
                with torch.no_grad():
                    layer.weight.copy_(torch.from_numpy(w.T.copy()))  # torch keeps [N, K]
                    layer.bias.copy_(torch.from_numpy(b))
                self.layers.append(layer)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            for layer, act in zip(self.layers, ACTIVATIONS, strict=True):
                x = layer(x)
                if act == "gelu":
                    x = torch.nn.functional.gelu(x)  # exact (erf) by default
            return {OUTPUT: x}

    return Mlp().eval()


def write_onnx(version_dir: Path, params: Params) -> None:
    import torch

    class Plain(torch.nn.Module):  # the TorchScript exporter wants a tensor, not a dict
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)[OUTPUT]

    module = Plain(_torch_module(params)).eval()  # type: ignore[arg-type]
    sample = torch.zeros(2, WIDTHS[0])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample,),
            str(version_dir / "model.onnx"),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def write_torch(version_dir: Path, params: Params) -> None:
    import torch

    module = _torch_module(params)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(
        module,  # type: ignore[arg-type]
        (torch.zeros(2, WIDTHS[0]),),
        dynamic_shapes={"x": {0: batch}},
    )
    torch.export.save(program, str(version_dir / "model.pt2"))


def write_jax(version_dir: Path, params: Params) -> None:
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    weights = [(jnp.asarray(w), jnp.asarray(b)) for w, b in params]

    def mlp(x: jax.Array) -> jax.Array:
        for (w, b), act in zip(weights, ACTIVATIONS, strict=True):
            x = x @ w + b
            if act == "gelu":
                x = jax.nn.gelu(x, approximate=False)
        return x

    (b,) = jax_export.symbolic_shape("b")
    exported = jax_export.export(jax.jit(mlp), platforms=["cpu"])(
        jax.ShapeDtypeStruct((b, WIDTHS[0]), jnp.float32)
    )
    (version_dir / "model.jax").write_bytes(exported.serialize())


def write_native(version_dir: Path, params: Params) -> None:
    from accelserve.backends.native_format import write_native_model

    layers, weights = [], {}
    for i, ((w, b), act) in enumerate(zip(params, ACTIVATIONS, strict=True)):
        weights[f"layers.{i}.weight"], weights[f"layers.{i}.bias"] = w, b
        layers.append(
            {
                "type": "linear",
                "weight": f"layers.{i}.weight",
                "bias": f"layers.{i}.bias",
                "activation": act,
            }
        )
    write_native_model(
        version_dir,
        layers,
        weights,
        {"name": INPUT, "datatype": "FP32", "dims": [WIDTHS[0]]},
        OUTPUT,
    )


WRITERS: dict[str, Callable[[Path, Params], None]] = {
    "onnx": write_onnx,
    "torch": write_torch,
    "jax": write_jax,
    "native": write_native,
}


def build(root: Path, backends: list[str], params: Params) -> dict[str, Path]:
    """Write every model once under ``root/models`` and a repository per backend plus one
    with all of them (directories of symlinks); returns backend -> model directory."""
    models: dict[str, Path] = {}
    for backend in backends:
        model_dir = root / "models" / model_name(backend)
        version = model_dir / "1"
        version.mkdir(parents=True, exist_ok=True)
        WRITERS[backend](version, params)
        (model_dir / "config.pbtxt").write_text(config_text(backend))
        models[backend] = model_dir
        for repo in (root / backend, root / "all"):
            repo.mkdir(parents=True, exist_ok=True)
            (repo / model_dir.name).symlink_to(model_dir, target_is_directory=True)
    return models
