"""The GPU candidates of ``accelserve optimize`` without a GPU: proposed only for a ``cuda``
device, each with the config Triton writes; that config parses, and the ONNX Runtime backend
maps it to the provider options (``gpu_providers``, the function a CUDA session uses)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from accelserve.backends.onnxruntime import gpu_providers
from accelserve.cli import main
from accelserve.config import parse_config
from accelserve.devices import parse_device
from accelserve.errors import ConfigError
from accelserve.tools.optimize.families import BackendRunner, Family
from accelserve.tools.optimize.gpu_candidates import ONNX_GPU_SPECS, TORCH_GPU_SPECS
from tests.unit.optimize.toy_models import mlp_repository

CUDA = parse_device("cuda:0")
WITH_TRT = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
CUDA_ONLY = WITH_TRT[1:]


def _onnx(tmp_path: Path, device: object = None) -> Family:
    model_dir = mlp_repository(tmp_path)
    return Family("onnx", model_dir, model_dir / "1" / "model.onnx", device)


def _providers(spec_name: str, available: list[str], index: int = 0) -> list[object]:
    config = parse_config(f'name: "m"\n{ONNX_GPU_SPECS[spec_name].config}')
    return gpu_providers(index, {}, config, available)


def test_gpu_candidates_are_proposed_on_cuda_only(tmp_path: Path) -> None:
    on_cpu = [s.name for s in _onnx(tmp_path / "a").kinds("")]
    on_gpu = [s.name for s in _onnx(tmp_path / "b", CUDA).kinds("")]
    assert not set(ONNX_GPU_SPECS) & set(on_cpu)
    assert on_gpu == [*on_cpu, "cuda-fp16", "cuda-graph", "trt-fp16", "trt-int8"]
    chosen = _onnx(tmp_path / "c", CUDA).kinds("fp16,trt-fp16")
    assert [s.name for s in chosen] == ["fp16", "trt-fp16"]


def test_asking_for_a_gpu_candidate_on_cpu_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = mlp_repository(tmp_path)
    rc = main(["optimize", str(model_dir), "--quiet", "--candidates", "trt-fp16,fp16"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--candidates: trt-fp16 run on a GPU; expected --device cuda:N, received cpu" in err


def test_tensorrt_precisions_map_to_the_provider_options() -> None:
    fp16 = _providers("trt-fp16", WITH_TRT, index=1)
    assert fp16 == [
        ("TensorrtExecutionProvider", {"device_id": 1, "trt_fp16_enable": True}),
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    int8 = _providers("trt-int8", WITH_TRT)
    assert int8[0] == ("TensorrtExecutionProvider", {"device_id": 0, "trt_int8_enable": True})
    # onnxruntime-gpu without TensorRT: the CUDA provider alone
    assert _providers("trt-fp16", CUDA_ONLY) == [
        ("CUDAExecutionProvider", {"device_id": 0}),
        "CPUExecutionProvider",
    ]


def test_cuda_graphs_map_to_enable_cuda_graph() -> None:
    assert _providers("cuda-graph", WITH_TRT) == [
        ("CUDAExecutionProvider", {"device_id": 0, "enable_cuda_graph": "1"}),
        "CPUExecutionProvider",
    ]
    assert _providers("cuda-fp16", WITH_TRT)[0] == ("CUDAExecutionProvider", {"device_id": 0})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'gpu_execution_accelerator: [ { name: "openvino" } ]',
            "gpu_execution_accelerator name: expected 'tensorrt'; received 'openvino'",
        ),
        (
            'gpu_execution_accelerator: [ { name: "tensorrt" parameters { key: "precision_mode" '
            'value: "FP8" } } ]',
            "tensorrt precision_mode: expected FP32, FP16 or INT8; received 'FP8'",
        ),
        (
            'gpu_execution_accelerator: [ { name: "tensorrt" parameters { key: "speed" '
            'value: "max" } } ]',
            "expected precision_mode or max_workspace_size_bytes; received 'speed'",
        ),
        (
            'cpu_execution_accelerator: [ { name: "openvino" } ]',
            "cpu_execution_accelerator: none is supported",
        ),
    ],
)
def test_bad_accelerators_are_named(text: str, message: str) -> None:
    config = parse_config(f'name: "m"\noptimization {{ execution_accelerators {{ {text} }} }}')
    with pytest.raises(ConfigError, match="model 'm' optimization") as caught:
        gpu_providers(0, {}, config, WITH_TRT)
    assert message in caught.value.message


@pytest.mark.parametrize("kind", sorted(ONNX_GPU_SPECS))
def test_each_onnx_gpu_candidate_builds_and_its_version_loads_on_cpu(
    kind: str, tmp_path: Path
) -> None:
    """The files build without a GPU, and a version with the overlay loads on a CPU instance
    (the GPU accelerators apply to GPU instances only, as in Triton)."""
    family = _onnx(tmp_path, CUDA)
    rng = np.random.default_rng(0)
    calibration = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(4)]
    spec = ONNX_GPU_SPECS[kind]
    built = family.build(spec, tmp_path / "work", calibration)
    runner = BackendRunner(family.model_dir, built.path, spec.config)
    answer = runner(calibration[0])
    assert answer["y"].shape == (4, 32) and answer["y"].dtype == np.float32


def test_torch_cuda_graphs_candidate_sets_reduce_overhead(tmp_path: Path) -> None:
    spec = TORCH_GPU_SPECS["compile-cuda-graphs"]
    parameters = parse_config(spec.config).parameters
    assert parameters["torch_compile"].string_value == "true"
    assert parameters["torch_compile_mode"].string_value == "reduce-overhead"
    pt2 = Family("torch", tmp_path, tmp_path / "1" / "model.pt2", CUDA)
    assert "compile-cuda-graphs" in [s.name for s in pt2.kinds("")]
    script = Family("torch", tmp_path, tmp_path / "1" / "model.pt", CUDA)
    assert [s.name for s in script.kinds("")] == ["bf16-autocast"]
    assert "compile-cuda-graphs" not in [
        s.name for s in Family("torch", tmp_path, pt2.source).kinds("")
    ]


def _ort_cuda() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


# On a GPU machine (scripts/device_check.py runs the gpu marker): each candidate answers there.
@pytest.mark.gpu
@pytest.mark.skipif(not _ort_cuda(), reason="needs onnxruntime-gpu and a CUDA device")
@pytest.mark.parametrize("kind", sorted(ONNX_GPU_SPECS))
def test_each_onnx_gpu_candidate_answers_on_cuda(kind: str, tmp_path: Path) -> None:
    family = _onnx(tmp_path, CUDA)
    rng = np.random.default_rng(0)
    calibration = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(4)]
    spec = ONNX_GPU_SPECS[kind]
    built = family.build(spec, tmp_path / "work", calibration)
    want = BackendRunner(family.model_dir, family.source)(calibration[0])["y"]
    got = BackendRunner(family.model_dir, built.path, spec.config, CUDA)(calibration[0])["y"]
    np.testing.assert_allclose(got, want, atol=0.1 if "int8" in kind else 0.02)


@pytest.mark.gpu
@pytest.mark.skipif(not _torch_cuda(), reason="needs a CUDA device visible to PyTorch")
def test_torch_cuda_graphs_candidate_answers_on_cuda(tmp_path: Path) -> None:
    from tests.unit.optimize.torch_toys import torch_repository

    model_dir = torch_repository(tmp_path)
    family = Family("torch", model_dir, model_dir / "1" / "model.pt2", CUDA)
    spec = TORCH_GPU_SPECS["compile-cuda-graphs"]
    x = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)}
    want = BackendRunner(model_dir, family.source)(x)["output__0"]
    got = family.runner(family.build(spec, tmp_path / "work", []).path, spec.config)(x)
    np.testing.assert_allclose(got["output__0"], want, atol=1e-3)


def test_a_bad_or_absent_device_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = mlp_repository(tmp_path)
    assert main(["optimize", str(model_dir), "--quiet", "--device", "tpu9x"]) == 2
    assert "device: expected one of cpu, cpu:N, cuda" in capsys.readouterr().err
    if not _ort_cuda():
        assert main(["optimize", str(model_dir), "--quiet", "--device", "cuda:0"]) == 2
        err = capsys.readouterr().err
        assert "ONNX Runtime here has no CUDA support" in err and "Traceback" not in err
