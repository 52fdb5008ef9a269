"""The GPU candidates, proposed only when ``accelserve optimize --device cuda:N``: each is a
model file plus the config its version needs (``Spec.config``, written as the version's
``config_overlay.pbtxt``), in the fields Triton uses, which the backends map to provider
options (``backends.onnxruntime.gpu_providers``) or ``torch.compile`` arguments.

ONNX models:

- ``cuda-fp16``: the ``fp16`` model file on the CUDA execution provider.
- ``cuda-graph``: the original file with ``optimization { cuda { graphs: true } }`` (the CUDA
  provider's ``enable_cuda_graph``: one captured graph replayed per run).
- ``trt-fp16``: the TensorRT execution provider at ``precision_mode: FP16``.
- ``trt-int8``: TensorRT at ``precision_mode: INT8`` on the ``int8-static`` (QDQ) file, whose
  calibrated scales TensorRT uses (explicit quantization).

PyTorch models: ``compile-cuda-graphs``, ``torch.compile(mode="reduce-overhead")`` (inductor
with CUDA graphs), ``.pt2`` only.

Written and unit-tested without a GPU: the configs parse and map to the provider options; their
speed and accuracy on a GPU are still to be measured (docs/optimize.md).
"""

from __future__ import annotations

from accelserve.tools.optimize.candidates import Spec, fp16, int8_static
from accelserve.tools.optimize.torch_candidates import parameters, same_file


def tensorrt(precision: str) -> str:
    """The overlay selecting the TensorRT execution accelerator at ``precision``."""
    return (
        "optimization { execution_accelerators { gpu_execution_accelerator: [ { "
        f'name: "tensorrt" parameters {{ key: "precision_mode" value: "{precision}" }} '
        "} ] } }\n"
    )


CUDA_GRAPHS = "optimization { cuda { graphs: true } }\n"

ONNX_GPU_SPECS: dict[str, Spec] = {
    s.name: s
    for s in (
        Spec("cuda-fp16", "FP16 model on the CUDA execution provider", fp16),
        Spec(
            "cuda-graph", "CUDA execution provider with CUDA graphs", same_file, config=CUDA_GRAPHS
        ),
        Spec("trt-fp16", "TensorRT execution provider, FP16", same_file, config=tensorrt("FP16")),
        Spec(
            "trt-int8",
            "TensorRT execution provider, INT8 from the calibrated QDQ model",
            int8_static,
            config=tensorrt("INT8"),
        ),
    )
}
TORCH_GPU_SPECS: dict[str, Spec] = {
    "compile-cuda-graphs": Spec(
        "compile-cuda-graphs",
        'torch.compile(mode="reduce-overhead"): inductor with CUDA graphs',
        same_file,
        config=parameters(torch_compile="true", torch_compile_mode="reduce-overhead"),
    )
}
