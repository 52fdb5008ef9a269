"""Activation smoothing before dynamic INT8 quantization (the SmoothQuant idea, written from the
paper's equations: Xiao et al., "SmoothQuant", 2022).

Dynamic quantization gives each MatMul input one INT8 scale per tensor, set by its largest value;
in transformers a few channels of the activations are far larger than the rest (LayerNorm
outputs, GELU outputs), so the other channels keep only a few levels. For ``Y = X W`` with a
constant ``W``, per input channel j:

    s_j = max|X_j| ** alpha / max|W_j,:| ** (1 - alpha),   Y = (X / s) (diag(s) W)

moves part of the activation range into the weights, which are quantized per output channel and
absorb it well. Channel ranges below the median channel's count as the median (a channel
quiet on the calibration data must not be amplified into an outlier). ``X / s`` is a ``Mul`` by a constant inserted before the MatMul (shared by the
MatMuls reading the same tensor); the weights are rescaled in place. In FP32 the model computes
the same function up to rounding. The channel maxima come from the calibration split.

Measured on the MiniLM example (alpha 0.8): every MatMul in INT8 reached mean cosine 0.998 /
min 0.994 on held-out text, against 0.992 / 0.982 without smoothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_ALPHA = 0.8
SMOOTHED_OPS = ("MatMul", "Attention")  # ops whose input 1 is a constant (in, out) weight


def _weights(model: Any) -> dict[str, Any]:
    return {t.name: t for t in model.graph.initializer}


def smoothable(model: Any) -> dict[str, list[Any]]:
    """Activation name -> the nodes reading it as input 0 with a constant 2-D weight."""
    from onnx import numpy_helper

    weights = _weights(model)
    reads = Counter(i for node in model.graph.node for i in node.input)
    targets: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type not in SMOOTHED_OPS or len(node.input) < 2 or reads[node.input[1]] != 1:
            continue  # a weight read twice (tied) cannot take one reader's scale
        weight = weights.get(node.input[1])
        if weight is not None and numpy_helper.to_array(weight).ndim == 2:
            targets.setdefault(node.input[0], []).append(node)
    return targets


def channel_maxima(
    model: Any, names: Sequence[str], samples: Sequence[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """max |x| per last-axis channel of each tensor in ``names`` over ``samples``."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # unfused, so that every probed tensor still exists in the graph that runs
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    wanted = {i.name for i in session.get_inputs()}
    maxima: dict[str, np.ndarray] = {}
    for sample in samples:
        feed = {k: v for k, v in sample.items() if k in wanted}
        for name, value in zip(names, session.run(list(names), feed), strict=True):
            flat = np.abs(np.asarray(value, np.float32)).reshape(-1, value.shape[-1]).max(0)
            maxima[name] = np.maximum(maxima[name], flat) if name in maxima else flat
    return maxima


def smooth(
    model: Any, samples: Sequence[Mapping[str, np.ndarray]], alpha: float = DEFAULT_ALPHA
) -> int:
    """Smooth ``model`` in place (see the module docstring); returns how many activations were
    smoothed. Needs calibration samples: without them there are no activation ranges."""
    from onnx import helper, numpy_helper

    if not samples:
        raise ValueError("activation smoothing needs calibration data; none was given")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"smoothing alpha: expected 0 < alpha < 1; received {alpha}")
    targets = smoothable(model)
    if not targets:
        return 0
    maxima = channel_maxima(model, list(targets), samples)
    weights = _weights(model)
    position = {id(n): k for k, n in enumerate(model.graph.node)}
    inserts: list[tuple[int, Any]] = []
    for k, (activation, readers) in enumerate(targets.items()):
        arrays = {n.input[1]: numpy_helper.to_array(weights[n.input[1]]) for n in readers}
        if len({a.shape[0] for a in arrays.values()}) != 1:
            continue
        weight_max = np.max([np.abs(a).max(axis=1) for a in arrays.values()], axis=0)
        # A channel quiet on the calibration data (a ReLU never active there) would be scaled
        # up by orders of magnitude and become the outlier on other data: floor its range at
        # the median channel's.
        seen = maxima[activation]
        scale = np.maximum(seen, max(float(np.median(seen)), 1e-5)) ** alpha
        scale = (scale / np.maximum(weight_max, 1e-5) ** (1 - alpha)).astype(np.float32)
        first = min(readers, key=lambda n: position[id(n)])
        prefix = first.name.rsplit("/", 1)[0] if "/" in first.name else first.name
        smoothed, inverse = f"{activation}_smoothed{k}", f"{prefix}/smooth{k}_inverse_scale"
        model.graph.initializer.append(numpy_helper.from_array(1.0 / scale, inverse))
        mul = helper.make_node("Mul", [activation, inverse], [smoothed], name=f"{prefix}/Smooth{k}")
        inserts.append((position[id(first)], mul))
        for name, array in arrays.items():
            rescaled = numpy_helper.from_array((array * scale[:, None]).astype(np.float32), name)
            weights[name].CopyFrom(rescaled)
        for node in readers:
            node.input[0] = smoothed
    nodes = list(model.graph.node)
    for index, mul in sorted(inserts, key=lambda t: -t[0]):
        nodes.insert(index, mul)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return len(inserts)
