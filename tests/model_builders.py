"""Small models the tests build, one per backend, all computing the same dense MLP

    y = relu(x @ W1 + b1) @ W2 + b2        x: [batch, 4] FP32 -> y: [batch, 3] FP32

so one NumPy reference (``mlp_reference``) checks every backend: an exported ``nn.Module``
(``model.pt2``), a ``jax.export`` artifact (``model.jax``), a native dense model
(``model.safetensors`` + ``model.json``), a Python model (``model.py``) and an ONNX graph
(``model.onnx``). Each builder writes ``<root>/<name>/config.pbtxt`` and version ``1``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

RNG = np.random.default_rng(42)
W1 = RNG.standard_normal((4, 8)).astype(np.float32)
B1 = RNG.standard_normal(8).astype(np.float32)
W2 = RNG.standard_normal((8, 3)).astype(np.float32)
B2 = RNG.standard_normal(3).astype(np.float32)

MLP_CONFIG = """
max_batch_size: 8
input [{ name: "x" data_type: TYPE_FP32 dims: [4] }]
output [{ name: "y" data_type: TYPE_FP32 dims: [3] }]
"""


def mlp_reference(x: np.ndarray) -> np.ndarray:
    """The ground truth, in float64."""
    h = np.maximum(x.astype(np.float64) @ W1 + B1, 0.0)
    return h @ W2 + B2


def _model_dir(root: Path, name: str, config: str) -> Path:
    version = root / name / "1"
    version.mkdir(parents=True, exist_ok=True)
    (root / name / "config.pbtxt").write_text(config)
    return version


def build_torch(root: Path, name: str = "torch_mlp", extra: str = "") -> Path:
    import torch

    class Mlp(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(4, 8)
            self.out = torch.nn.Linear(8, 3)
            with torch.no_grad():
                self.hidden.weight.copy_(torch.from_numpy(W1.T))
                self.hidden.bias.copy_(torch.from_numpy(B1))
                self.out.weight.copy_(torch.from_numpy(W2.T))
                self.out.bias.copy_(torch.from_numpy(B2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.hidden(x)))

    version = _model_dir(root, name, MLP_CONFIG + extra)
    batch = torch.export.Dim("batch", max=8)
    program = torch.export.export(
        Mlp().eval(), (torch.zeros(2, 4),), dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(program, str(version / "model.pt2"))
    return root / name


def torch_parameter_bytes() -> int:
    """What the torch instance holds: W1, b1, W2, b2 as float32."""
    return sum(a.nbytes for a in (W1, B1, W2, B2))


def _jax_export(fn: object, platforms: tuple[str, ...]) -> bytes:
    import jax
    import jax.numpy as jnp
    from jax import export

    (b,) = export.symbolic_shape("b")
    exported = export.export(jax.jit(fn), platforms=platforms)(
        jax.ShapeDtypeStruct((b, 4), jnp.float32)
    )
    return bytes(exported.serialize())


def build_jax(
    root: Path, name: str = "jax_mlp", extra: str = "", platforms: tuple[str, ...] = ("cpu",)
) -> Path:
    import jax.numpy as jnp

    def mlp(x: object) -> object:
        return jnp.maximum(x @ W1 + B1, 0.0) @ W2 + B2

    version = _model_dir(root, name, MLP_CONFIG + extra)
    (version / "model.jax").write_bytes(_jax_export(mlp, platforms))
    return root / name


# A slower JAX model for the multi-instance test: each batch takes a few milliseconds, so
# concurrent requests overlap and the scheduler must use several instances.
SPREAD_WIDTH, SPREAD_STEPS = 256, 96
P = (RNG.standard_normal((4, SPREAD_WIDTH)) / 2).astype(np.float32)
M = (RNG.standard_normal((SPREAD_WIDTH, SPREAD_WIDTH)) / (2 * np.sqrt(SPREAD_WIDTH))).astype(
    np.float32
)
Q = (RNG.standard_normal((SPREAD_WIDTH, 3)) / np.sqrt(SPREAD_WIDTH)).astype(np.float32)


def spread_reference(x: np.ndarray) -> np.ndarray:
    h = np.tanh(x.astype(np.float64) @ P)
    for _ in range(SPREAD_STEPS):
        h = np.tanh(h @ M)
    return h @ Q


def build_jax_spread(root: Path, name: str, extra: str = "") -> Path:
    import jax
    import jax.numpy as jnp

    def spread(x: jax.Array) -> jax.Array:
        h = jnp.tanh(x @ P)
        h = jax.lax.fori_loop(0, SPREAD_STEPS, lambda _, h: jnp.tanh(h @ M), h)
        return h @ Q

    version = _model_dir(root, name, MLP_CONFIG + extra)
    (version / "model.jax").write_bytes(_jax_export(spread, ("cpu",)))
    return root / name


def build_native(root: Path, name: str = "native_mlp", extra: str = "") -> Path:
    from accelserve.backends.native_format import write_native_model

    version = _model_dir(root, name, MLP_CONFIG + extra)
    write_native_model(
        version,
        layers=[
            {"type": "linear", "weight": "w1", "bias": "b1", "activation": "relu"},
            {"type": "linear", "weight": "w2", "bias": "b2", "activation": None},
        ],
        weights={"w1": W1, "b1": B1, "w2": W2, "b2": B2},
        input_spec={"name": "x", "datatype": "FP32", "dims": [4]},
        output_spec="y",
    )
    return root / name


def native_weight_bytes() -> int:
    """What a native CPU instance holds: the same weights, plus a C-ordered copy of W1 and W2
    for one-row requests (kernels.cpu.linear.LinearChain)."""
    return torch_parameter_bytes() + W1.nbytes + W2.nbytes


PYTHON_MODEL = textwrap.dedent(
    """
    from pathlib import Path

    import numpy as np


    class Model:
        def initialize(self, config, device):
            weights = np.load(Path(__file__).parent / "weights.npz")
            self.w1, self.b1 = weights["w1"], weights["b1"]
            self.w2, self.b2 = weights["w2"], weights["b2"]

        def execute(self, batch):
            h = np.maximum(batch["x"] @ self.w1 + self.b1, 0)
            return {"y": (h @ self.w2 + self.b2).astype(np.float32)}
    """
)


def build_python(root: Path, name: str = "python_mlp", extra: str = "") -> Path:
    version = _model_dir(root, name, MLP_CONFIG + extra)
    (version / "model.py").write_text(PYTHON_MODEL)
    np.savez(version / "weights.npz", w1=W1, b1=B1, w2=W2, b2=B2)
    return root / name


def build_onnx(root: Path, name: str = "onnx_mlp", extra: str = "") -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    batch: list[str | int | None] = ["batch"]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["xw1"]),
            helper.make_node("Add", ["xw1", "b1"], ["pre"]),
            helper.make_node("Relu", ["pre"], ["h"]),
            helper.make_node("MatMul", ["h", "w2"], ["hw2"]),
            helper.make_node("Add", ["hw2", "b2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*batch, 3])],
        initializer=[
            numpy_helper.from_array(array, name)
            for name, array in (("w1", W1), ("b1", B1), ("w2", W2), ("b2", B2))
        ],
    )
    model = helper.make_model(
        graph, producer_name="accelserve-tests", opset_imports=[helper.make_opsetid("", 17)]
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    version = _model_dir(root, name, MLP_CONFIG + extra)
    onnx.save(model, str(version / "model.onnx"))
    return root / name


BUILDERS = {
    "torch_mlp": build_torch,
    "jax_mlp": build_jax,
    "native_mlp": build_native,
    "python_mlp": build_python,
    "onnx_mlp": build_onnx,
}
