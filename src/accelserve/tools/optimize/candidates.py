"""The ONNX candidates: each turns the original model file into an optimized model file.

- ``ort-graph``: ONNX Runtime's offline graph optimization (fusions at the extended level, which
  stay portable across CPUs), saved as a model file.
- ``fp16``: weights and compute in FP16, inputs and outputs kept in their types, numerically
  sensitive ops (reductions, normalization, softmax, exponentials) kept in FP32.
- ``int8-dynamic-matmul`` / ``int8-dynamic-all``: dynamic INT8 quantization, weights per
  channel, of the MatMul ops only or of every op type ONNX Runtime quantizes.
- ``int8-static``: static INT8 (QDQ, per-channel weights, UINT8 activations), ranges calibrated
  on the calibration split of the validation data.

- ``ort-fusion``: ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization,
  BiasGelu, EmbedLayerNormalization; ``onnx_fusion.py``), only for models where something fuses.
- ``int8-smooth-matmul``: activation smoothing (``onnx_smooth.py``) on the calibration split,
  then dynamic INT8 of the MatMuls; ``int8-fusion-matmul`` / ``int8-fusion-smooth``: the same
  quantization (MatMul and the fused Attention's projections) on the fused graph, without or
  with smoothing.

A candidate with a ``base`` builds it first (fusion, smoothing) and quantizes that; the base is
made once per run and its node names are the ones the search excludes.
A quantization candidate accepts ``exclude``: the nodes kept in FP32 (the sensitive-layer
search in ``search.py`` fills it). onnxruntime and onnx are imported in the functions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Ops kept in FP32 by the fp16 candidate: their range or precision needs it.
FP16_KEEP_FP32 = (
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "ReduceMean",
    "ReduceSum",
    "ReduceSumSquare",
    "Pow",
    "Sqrt",
    "Softmax",
    "LogSoftmax",
    "Exp",
    "Log",
    "Erf",
)
QUANTIZED_OP_TYPES = ("MatMul", "Gemm", "Conv", "Attention", "Gather", "EmbedLayerNormalization")
FUSED_QUANTIZED = ("MatMul", "Attention")  # the fused graph's weight products

Samples = Sequence[Mapping[str, np.ndarray]]


class NotApplicable(ValueError):
    """The candidate does not apply to this model (e.g. no transformer pattern to fuse)."""


@dataclass(frozen=True)
class Spec:
    """One kind of candidate: ``build(source, dest, calibration, exclude)`` writes ``dest``;
    with a ``base``, ``source`` is the base model that ``base(original, dest, calibration)``
    wrote."""

    name: str
    description: str
    build: Callable[[Path, Path, Samples, Sequence[str]], None]
    quantizes: tuple[str, ...] = ()  # op types it quantizes: the search may exclude their nodes
    config: str = ""  # what its version adds to the model's config (config_overlay.pbtxt)
    base: Callable[[Path, Path, Samples], None] | None = None


@dataclass
class Built:
    spec: Spec
    path: Path
    excluded: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if not self.excluded:
            return self.spec.name
        return f"{self.spec.name}-keep{len(self.excluded)}"


def ort_graph(source: Path, dest: Path, calibration: Samples, exclude: Sequence[str]) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dest)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def fp16(source: Path, dest: Path, calibration: Samples, exclude: Sequence[str]) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=[*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32],
        node_block_list=list(exclude) or None,
    )
    onnx.save(converted, str(dest))


def _dynamic(
    op_types: Sequence[str] | None,
) -> Callable[[Path, Path, Samples, Sequence[str]], None]:
    def build(source: Path, dest: Path, calibration: Samples, exclude: Sequence[str]) -> None:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            source,
            dest,
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude) or None,
            # contrib ops (fused graphs) defeat shape inference: their outputs are FP32
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )

    return build


def _fused(source: Path, dest: Path, calibration: Samples) -> None:
    import onnx

    from accelserve.tools.optimize.onnx_fusion import fuse_transformer

    fused = fuse_transformer(str(source))
    if not fused.total:
        raise NotApplicable("no transformer pattern to fuse (Attention, LayerNorm, Gelu)")
    onnx.save(fused.model, str(dest))


def _smoothed(fuse: bool) -> Callable[[Path, Path, Samples], None]:
    def base(source: Path, dest: Path, calibration: Samples) -> None:
        import onnx

        from accelserve.tools.optimize.onnx_smooth import smooth

        if fuse:
            _fused(source, dest, calibration)
        model = onnx.load(str(dest if fuse else source))
        if not smooth(model, calibration):
            raise NotApplicable("no MatMul with a constant weight to smooth")
        onnx.save(model, str(dest))

    return base


def ort_fusion(source: Path, dest: Path, calibration: Samples, exclude: Sequence[str]) -> None:
    shutil.copyfile(source, dest)  # the base is the fused graph


def int8_static(source: Path, dest: Path, calibration: Samples, exclude: Sequence[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ValueError("int8-static needs calibration data; none was given")
    quantize_static(
        source,
        dest,
        _Reader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=list(exclude) or None,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over the calibration samples."""

    def __init__(self, samples: Samples) -> None:
        self._samples = samples
        self._iter: Iterator[Mapping[str, np.ndarray]] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        sample = next(self._iter, None)
        return dict(sample) if sample is not None else None

    def rewind(self) -> None:
        self._iter = iter(self._samples)


ONNX_SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("ort-graph", "ONNX Runtime offline graph optimization (extended level)", ort_graph),
        Spec("fp16", "FP16 weights and compute, I/O and sensitive ops in FP32", fp16),
        Spec(
            "int8-dynamic-matmul",
            "dynamic INT8, per-channel weights, MatMul only",
            _dynamic(["MatMul"]),
            ("MatMul",),
        ),
        Spec(
            "int8-dynamic-all",
            "dynamic INT8, per-channel weights, every quantizable op",
            _dynamic(None),
            QUANTIZED_OP_TYPES,
        ),
        Spec(
            "int8-static",
            "static INT8 (QDQ), per-channel weights, calibrated ranges",
            int8_static,
            QUANTIZED_OP_TYPES,
        ),
        Spec(
            "ort-fusion",
            "ONNX Runtime transformer fusions (Attention, SkipLayerNorm, BiasGelu)",
            ort_fusion,
            base=_fused,
        ),
        Spec(
            "int8-smooth-matmul",
            "activation smoothing, then dynamic INT8, per-channel weights, MatMul only",
            _dynamic(["MatMul"]),
            ("MatMul",),
            base=_smoothed(fuse=False),
        ),
        Spec(
            "int8-fusion-matmul",
            "transformer fusions, then dynamic INT8 of MatMul and Attention",
            _dynamic(FUSED_QUANTIZED),
            FUSED_QUANTIZED,
            base=_fused,
        ),
        Spec(
            "int8-fusion-smooth",
            "transformer fusions, activation smoothing, dynamic INT8 of MatMul and Attention",
            _dynamic(FUSED_QUANTIZED),
            FUSED_QUANTIZED,
            base=_smoothed(fuse=True),
        ),
    )
}


def parse_kinds(text: str) -> list[Spec]:
    """``fp16,int8-static`` -> their specs; empty: all of them."""
    if not text.strip():
        return list(ONNX_SPECS.values())
    specs = []
    for item in (t.strip() for t in text.split(",")):
        if item not in ONNX_SPECS:
            raise ValueError(
                f"--candidates: expected names among {', '.join(ONNX_SPECS)}; received {item!r}"
            )
        specs.append(ONNX_SPECS[item])
    return specs


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """onnxruntime.quantization logs advice on the root logger at WARNING for every model."""
    import logging
    import warnings

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:  # and numpy warns of a 0/0 on constant calibration ranges, which it handles
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        root.setLevel(level)


def base_of(spec: Spec, source: Path, workdir: Path, calibration: Samples) -> Path:
    """The model ``spec`` starts from: ``source``, or its base built once under ``workdir``
    (NotApplicable when the base does not apply to this model)."""
    if spec.base is None:
        return source
    dest = workdir / "bases" / spec.name / "model.onnx"
    if not dest.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _quiet_quantizer():
            spec.base(source, dest, calibration)
    return dest


def build(
    spec: Spec, source: Path, workdir: Path, calibration: Samples, exclude: Sequence[str] = ()
) -> Built:
    """Build one candidate into its own folder under ``workdir``."""
    start = base_of(spec, source, workdir, calibration)
    folder = workdir / (spec.name + (f"-keep{len(exclude)}" if exclude else ""))
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / "model.onnx"
    with _quiet_quantizer():
        spec.build(start, dest, calibration, exclude)
    return Built(spec, dest, list(exclude))


def quantizable_nodes(path: Path, op_types: Sequence[str]) -> list[str]:
    """Names of the nodes of ``op_types`` (those a quantizer may turn into INT8), in graph
    order; activation-by-activation products included, since they lose accuracy too."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    wanted = set(op_types)
    return [n.name for n in model.graph.node if n.op_type in wanted and n.name]


class Runner:
    """A CPU ONNX Runtime session on one model file, for reference and accuracy runs."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: v for k, v in tensors.items() if k in self.inputs}
        results: list[Any] = self.session.run(self.outputs, feed)
        return dict(zip(self.outputs, results, strict=True))
