"""One small net written in each backend's format, with identical weights.

A ``Net`` is a chain of linear layers (its widths, and an optional activation after each).
Two are defined:

- ``MLP``: ``gelu(x W0 + b0) -> gelu(. W1 + b1) -> . W2 + b2`` with widths 256 -> 512 -> 512 ->
  256 (0.53 M parameters, 2.1 MB of FP32 weights, about 1 MFLOP per row): the size of a small
  served model (a reranker or projection head), small enough that serving overhead and
  per-call framework cost show. GELU is the exact (erf) form in every format.
- ``SEED``: the seed document's model, ``y = x W + b`` with ``W`` 2x2 and ``b`` zeros, no
  activation: nothing but serving overhead.

``build(root, backends, make_params(net), net)`` writes a model repository per backend under
``root`` (``root/<backend>/`` holds one model, ``<net>_<backend>``) and one repository holding
all of them (``root/all/``), each model with the same ``config.pbtxt`` apart from its platform:
input ``x`` FP32 [K], output ``y`` FP32 [N], ``max_batch_size`` 64, dynamic batching, one CPU
instance.

Used by benchmarks/server/bench_backends.py; framework imports stay inside the writers.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Net:
    name: str  # prefix of its model names
    widths: tuple[int, ...]  # input width, then each layer's output width
    activations: tuple[str | None, ...]  # after each linear layer: "gelu" or None
    zero_bias: bool = False  # biases all zeros (the seed's b) rather than drawn

    @property
    def inputs(self) -> int:
        return self.widths[0]

    @property
    def outputs(self) -> int:
        return self.widths[-1]


MLP = Net("mlp", (256, 512, 512, 256), ("gelu", "gelu", None))
SEED = Net("seed", (2, 2), (None,), zero_bias=True)
NETS = {net.name: net for net in (MLP, SEED)}
MAX_BATCH = 64
BACKENDS: dict[str, str] = {  # name -> platform
    "onnx": "onnxruntime_onnx",
    "torch": "accelserve_torch_export",
    "jax": "jax",
    "native": "accelserve_native",
    "tf": "tensorflow_savedmodel",
}
INPUT, OUTPUT = "x", "y"

Params = list[tuple[np.ndarray, np.ndarray]]  # (W [K, N], b [N]) per layer


def model_name(backend: str, net: Net = MLP) -> str:
    return f"{net.name}_{backend}"


def make_params(net: Net = MLP, seed: int = 0) -> Params:
    """Fixed-seed FP32 weights, scaled like a trained layer (unit-variance activations)."""
    rng = np.random.default_rng(seed)
    params = []
    for k, n in itertools.pairwise(net.widths):
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        b = (0.1 * rng.standard_normal(n)).astype(np.float32)
        params.append((w, np.zeros_like(b) if net.zero_bias else b))
    return params


def reference(x: np.ndarray, params: Params, net: Net = MLP) -> np.ndarray:
    """The network in float64 NumPy (exact GELU through scipy's erf): the ground truth."""
    from scipy.special import erf

    y = x.astype(np.float64)
    for (w, b), act in zip(params, net.activations, strict=True):
        y = y @ w.astype(np.float64) + b
        if act == "gelu":
            y = 0.5 * y * (1.0 + erf(y / np.sqrt(2.0)))
    return y


def config_text(backend: str, net: Net = MLP) -> str:
    return f"""name: "{model_name(backend, net)}"
platform: "{BACKENDS[backend]}"
max_batch_size: {MAX_BATCH}
input [ {{ name: "{INPUT}" data_type: TYPE_FP32 dims: [ {net.inputs} ] }} ]
output [ {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ {net.outputs} ] }} ]
dynamic_batching {{ }}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
"""


def _torch_module(params: Params, net: Net) -> object:
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
            for layer, act in zip(self.layers, net.activations, strict=True):
                x = layer(x)
                if act == "gelu":
                    x = torch.nn.functional.gelu(x)  # exact (erf) by default
            return {OUTPUT: x}

    return Mlp().eval()


def write_onnx(version_dir: Path, params: Params, net: Net) -> None:
    import torch

    class Plain(torch.nn.Module):  # the TorchScript exporter wants a tensor, not a dict
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)[OUTPUT]

    module = Plain(_torch_module(params, net)).eval()  # type: ignore[arg-type]
    sample = torch.zeros(2, net.inputs)
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


def write_torch(version_dir: Path, params: Params, net: Net) -> None:
    import torch

    module = _torch_module(params, net)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    program = torch.export.export(
        module,  # type: ignore[arg-type]
        (torch.zeros(2, net.inputs),),
        dynamic_shapes={"x": {0: batch}},
    )
    torch.export.save(program, str(version_dir / "model.pt2"))


def write_jax(version_dir: Path, params: Params, net: Net) -> None:
    import jax
    import jax.numpy as jnp
    from jax import export as jax_export

    weights = [(jnp.asarray(w), jnp.asarray(b)) for w, b in params]

    def mlp(x: jax.Array) -> jax.Array:
        for (w, b), act in zip(weights, net.activations, strict=True):
            x = x @ w + b
            if act == "gelu":
                x = jax.nn.gelu(x, approximate=False)
        return x

    (b,) = jax_export.symbolic_shape("b")
    exported = jax_export.export(jax.jit(mlp), platforms=["cpu"])(
        jax.ShapeDtypeStruct((b, net.inputs), jnp.float32)
    )
    (version_dir / "model.jax").write_bytes(exported.serialize())


def write_native(version_dir: Path, params: Params, net: Net) -> None:
    from accelserve.backends.native_format import write_native_model

    layers, weights = [], {}
    for i, ((w, b), act) in enumerate(zip(params, net.activations, strict=True)):
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
        {"name": INPUT, "datatype": "FP32", "dims": [net.inputs]},
        OUTPUT,
    )


def write_tf(version_dir: Path, params: Params, net: Net) -> None:
    """A ``tf.Module`` whose ``serving_default`` signature maps ``x`` [None, K] to ``y``."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    import tensorflow as tf

    class Mlp(tf.Module):
        def __init__(self) -> None:
            super().__init__(name=f"{net.name}_tf")
            self.layers = [(tf.Variable(w), tf.Variable(b)) for w, b in params]

        @tf.function(input_signature=[tf.TensorSpec([None, net.inputs], tf.float32, name=INPUT)])
        def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
            for (w, b), act in zip(self.layers, net.activations, strict=True):
                x = tf.matmul(x, w) + b
                if act == "gelu":
                    x = tf.nn.gelu(x, approximate=False)
            return {OUTPUT: x}

    module = Mlp()
    tf.saved_model.save(
        module,
        str(version_dir / "model.savedmodel"),
        signatures={"serving_default": module.serve},
    )


WRITERS: dict[str, Callable[[Path, Params, Net], None]] = {
    "onnx": write_onnx,
    "torch": write_torch,
    "jax": write_jax,
    "native": write_native,
    "tf": write_tf,
}


def build(root: Path, backends: list[str], params: Params, net: Net = MLP) -> dict[str, Path]:
    """Write every model once under ``root/models`` and a repository per backend plus one
    with all of them (directories of symlinks); returns backend -> model directory."""
    models: dict[str, Path] = {}
    for backend in backends:
        model_dir = root / "models" / model_name(backend, net)
        version = model_dir / "1"
        version.mkdir(parents=True, exist_ok=True)
        WRITERS[backend](version, params, net)
        (model_dir / "config.pbtxt").write_text(config_text(backend, net))
        models[backend] = model_dir
        for repo in (root / backend, root / "all"):
            repo.mkdir(parents=True, exist_ok=True)
            (repo / model_dir.name).symlink_to(model_dir, target_is_directory=True)
    return models
