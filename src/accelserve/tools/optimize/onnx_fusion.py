"""Transformer graph fusion for the ``ort-fusion`` candidate.

ONNX Runtime's transformer optimizer (``onnxruntime.transformers.optimizer``) fuses
SkipLayerNormalization, BiasGelu, EmbedLayerNormalization and, when it recognizes the pattern,
self-attention into single contrib ops. Its attention matcher expects the eager BERT export
(an additive ``(1 - mask) * -10000`` mask); a PyTorch export of scaled-dot-product attention
(boolean mask through ``Where(mask, 0, -inf)``, the scale split over Q and K, and a
``Where(IsNaN(p), 0, p)`` guard after the Softmax) is not recognized. ``fuse_sdpa_attention``
matches that form here and writes ONNX Runtime's ``Attention`` op (com.microsoft) over the
merged Q/K/V weights, with the 2-D padding mask as its raw ``mask_index``; then the ORT
optimizer does the rest.

A fused graph is exact up to float rounding except for rows with no key to attend (an
all-zero mask), which padding never produces. Any mismatch would show in the optimizer's
accuracy check, which judges every candidate against the original.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MS_DOMAIN = "com.microsoft"


@dataclass
class Fused:
    model: Any  # onnx.ModelProto
    counts: dict[str, int] = field(default_factory=dict)  # fused op type -> count

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class _Graph:
    """Producer/consumer indexes and constant lookup over an onnx GraphProto."""

    def __init__(self, graph: Any) -> None:
        from onnx import numpy_helper

        self.graph = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.initializers = {t.name: t for t in graph.initializer}
        self._to_array = numpy_helper.to_array

    def parent(self, node: Any, index: int, op_type: str) -> Any | None:
        if index >= len(node.input):
            return None
        found = self.producer.get(node.input[index])
        return found if found is not None and found.op_type == op_type else None

    def constant(self, name: str) -> np.ndarray | None:
        if name in self.initializers:
            return np.asarray(self._to_array(self.initializers[name]))
        node = self.producer.get(name)
        if node is not None and node.op_type == "Identity":  # exporters alias equal tensors
            return self.constant(node.input[0])
        if node is not None and node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            if attr.name == "value":
                return np.asarray(self._to_array(attr.t))
        return None

    def user(self, node: Any) -> Any | None:
        """The one consumer of ``node``'s output that reads values (Shape ops aside)."""
        users = [u for u in self.consumers.get(node.output[0], []) if u.op_type != "Shape"]
        return users[0] if len(users) == 1 else None

    def attr_ints(self, node: Any, name: str) -> list[int]:
        return next((list(a.ints) for a in node.attribute if a.name == name), [])


@dataclass
class _Projection:
    """MatMul(x, W) + b -> Reshape -> Transpose(perm): one of Q, K, V."""

    x: str
    weight: np.ndarray
    bias: np.ndarray
    head_size: int | None
    nodes: list[Any]


def _projection(g: _Graph, start: str, perm: Sequence[int]) -> _Projection | None:
    transpose = g.producer.get(start)
    if transpose is None or transpose.op_type != "Transpose":
        return None
    if g.attr_ints(transpose, "perm") != list(perm):
        return None
    reshape = g.parent(transpose, 0, "Reshape")
    add = g.parent(reshape, 0, "Add") if reshape is not None else None
    if reshape is None or add is None:
        return None
    for k in (0, 1):
        matmul, bias = g.parent(add, k, "MatMul"), g.constant(add.input[1 - k])
        if matmul is not None and bias is not None:
            break
    else:
        return None
    weight = g.constant(matmul.input[1])
    if weight is None or weight.ndim != 2 or bias.ndim != 1:
        return None
    shape = g.producer.get(reshape.input[1])
    last = g.constant(shape.input[-1]) if shape is not None and shape.op_type == "Concat" else None
    if last is None:
        last = g.constant(reshape.input[1])
    head = int(np.ravel(last)[-1]) if last is not None and np.ravel(last)[-1] > 0 else None
    return _Projection(matmul.input[0], weight, bias, head, [transpose, reshape, add, matmul])


def _scaled(g: _Graph, name: str) -> tuple[str, float]:
    """``Mul(t, scalar)`` -> (t, scalar); anything else -> (name, 1.0)."""
    node = g.producer.get(name)
    if node is not None and node.op_type == "Mul":
        for k in (0, 1):
            value = g.constant(node.input[1 - k])
            if value is not None and value.size == 1:
                return node.input[k], float(np.ravel(value)[0])
    return name, 1.0


def _mask_input(g: _Graph, name: str, inputs: dict[str, Any]) -> str | None:
    """The 2-D integer graph input the additive mask ``name`` is computed from (not counting
    inputs reached only through Shape ops, which read sizes, not values)."""
    seen, stack, found = set(), [name], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current in inputs:
            found.add(current)
            continue
        node = g.producer.get(current)
        if node is not None and node.op_type != "Shape":
            stack.extend(i for i in node.input if i)
    if len(found) != 1:
        return None
    (only,) = found
    dims = inputs[only].type.tensor_type.shape.dim
    return only if len(dims) == 2 else None


def fuse_sdpa_attention(model: Any) -> int:
    """Replace each exported SDPA self-attention block of ``model`` (in place) by an
    ``Attention`` node; returns how many were fused."""
    from onnx import TensorProto, helper, numpy_helper

    g = _Graph(model.graph)
    inputs = {i.name: i for i in model.graph.input}
    mask_casts: dict[str, str] = {}
    replaced: list[tuple[Any, list[Any]]] = []  # (new node, nodes it replaces)
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax"]:
        add = g.parent(softmax, 0, "Add")
        if add is None:
            continue
        scores = mask = None
        for k in (0, 1):
            if g.parent(add, k, "MatMul") is not None:
                scores, mask = g.parent(add, k, "MatMul"), add.input[1 - k]
                break
        if scores is None or mask is None:
            continue
        q_name, q_scale = _scaled(g, scores.input[0])
        k_name, k_scale = _scaled(g, scores.input[1])
        q, k_ = _projection(g, q_name, (0, 2, 1, 3)), _projection(g, k_name, (0, 2, 3, 1))
        probs = softmax.output[0]
        users = g.consumers.get(probs, [])
        guard: list[Any] = []
        if len(users) == 2 and {u.op_type for u in users} == {"IsNaN", "Where"}:
            where = next(u for u in users if u.op_type == "Where")
            guard, probs = [*users], where.output[0]
        context = next(iter(g.consumers.get(probs, [])), None)
        if q is None or k_ is None or context is None or context.op_type != "MatMul":
            continue
        v = _projection(g, context.input[1], (0, 2, 1, 3))
        merge = [context]  # then an optional same-shape Reshape, Transpose(0, 2, 1, 3), Reshape
        while (user := g.user(merge[-1])) is not None and user.op_type == "Reshape":
            if len(merge) > 1:
                break
            merge.append(user)
        merge_t = g.user(merge[-1])
        merge_r = g.user(merge_t) if merge_t is not None else None
        if (
            v is None
            or merge_t is None
            or merge_t.op_type != "Transpose"
            or g.attr_ints(merge_t, "perm") != [0, 2, 1, 3]
            or merge_r is None
            or merge_r.op_type != "Reshape"
            or not q.x == k_.x == v.x
            or q.head_size is None
            or q.weight.shape[1] % q.head_size
        ):
            continue
        mask_name = _mask_input(g, mask, inputs)
        if mask_name is None:
            continue
        if mask_name not in mask_casts:
            mask_casts[mask_name] = f"{mask_name}_int32_for_attention"
        prefix = softmax.name.rsplit("/", 1)[0] if "/" in softmax.name else softmax.name
        weight = np.concatenate([q.weight, k_.weight, v.weight], axis=1).astype(np.float32)
        bias = np.concatenate([q.bias, k_.bias, v.bias]).astype(np.float32)
        for suffix, array in (("qkv_weight", weight), ("qkv_bias", bias)):
            model.graph.initializer.append(numpy_helper.from_array(array, f"{prefix}/{suffix}"))
        node = helper.make_node(
            "Attention",
            [q.x, f"{prefix}/qkv_weight", f"{prefix}/qkv_bias", mask_casts[mask_name]],
            [merge_r.output[0]],
            name=f"{prefix}/Attention",
            domain=MS_DOMAIN,
            num_heads=q.weight.shape[1] // q.head_size,
            scale=q_scale * k_scale if q_scale * k_scale != 1.0 else q.head_size**-0.5,
        )
        old = [*q.nodes, *k_.nodes, *v.nodes, scores, add, softmax, *guard, *merge]
        replaced.append((node, [*old, merge_t, merge_r]))
    if not replaced:
        return 0
    casts = [
        helper.make_node("Cast", [src], [dst], name=f"{dst}/Cast", to=TensorProto.INT32)
        for src, dst in mask_casts.items()
    ]
    dropped = {id(n) for _, old in replaced for n in old}
    position = {id(old[-1]): new for new, old in replaced}  # the new node takes the last's place
    nodes = [*casts]
    for n in model.graph.node:
        if id(n) in position:
            nodes.append(position[id(n)])
        elif id(n) not in dropped:
            nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    _prune(model)
    return len(replaced)


def _prune(model: Any) -> None:
    """Drop the nodes and initializers nothing reads any more (the mask's former path)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept: list[Any] = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    used = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(used)


def fuse_transformer(source: str) -> Fused:
    """The SDPA attention fusion above, then ONNX Runtime's BERT fusions (SkipLayerNorm,
    BiasGelu, EmbedLayerNorm, and its own attention matcher for eager exports)."""
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    model = onnx.load(source)
    before = Counter(n.op_type for n in model.graph.node)
    fuse_sdpa_attention(model)
    optimized = optimize_model(model, model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    after = optimized.get_fused_operator_statistics()  # op type -> nodes of it now
    counts = {op: int(n) - before[op] for op, n in after.items() if int(n) > before[op]}
    return Fused(optimized.model, counts)
