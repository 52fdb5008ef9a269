"""PyTorch backend: torch.export programs (model.pt2) and TorchScript (model.pt) on the CPU."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from backend_helpers import ABSENT_CUDA, config, needs_cuda, params, version_dir

from accelserve.backends.torch import TorchBackend
from accelserve.config import config_to_json
from accelserve.devices import Device
from accelserve.errors import ConfigError, ModelExecutionError
from accelserve.repository import load_backend
from accelserve.types import TensorSpec

CPU = Device("cpu", 0)


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class TwoHeads(torch.nn.Module):
    """Two inputs, a dict of two outputs: names come from the signature and the dict keys."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": a + b, "diff": a - b}


class Pair(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a * 2 + b, a - b


def _export(module: torch.nn.Module, args: tuple[torch.Tensor, ...], path: Path) -> None:
    batch = torch.export.Dim("batch")
    names = ["x"] if len(args) == 1 else ["a", "b"]
    dynamic = {n: {0: batch} for n in names}
    torch.export.save(torch.export.export(module, args, dynamic_shapes=dynamic), str(path))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("torch_models")
    _export(Mlp(), (torch.randn(2, 4),), version_dir(root, "mlp") / "model.pt2")
    two = (torch.randn(2, 5), torch.randn(2, 5))
    _export(TwoHeads(), two, version_dir(root, "heads") / "model.pt2")
    static = torch.export.export(Mlp(), (torch.randn(2, 4),))  # no dynamic batch dim
    torch.export.save(static, str(version_dir(root, "static") / "model.pt2"))
    with warnings.catch_warnings():  # PyTorch deprecates writing TorchScript, not serving it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(Pair()), str(version_dir(root, "script") / "model.pt"))
    return root


def _mlp_reference(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return Mlp()(torch.from_numpy(x)).numpy()


def test_export_completes_config_and_matches_module(root: Path) -> None:
    cfg = config(name="mlp")
    backend = load_backend(root / "mlp" / "1", cfg, CPU)
    assert backend.inputs == [TensorSpec("x", "FP32", (4,))]
    assert backend.outputs == [TensorSpec("output__0", "FP32", (3,))]
    assert backend.max_batch_size == -1
    completed = config_to_json(cfg)
    assert completed["platform"] == "accelserve_torch_export"
    assert completed["max_batch_size"] > 0
    assert [i["dims"] for i in completed["input"]] == [[4]]
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 4), dtype=np.float32)
        y = backend.infer({"x": x})["output__0"]
        np.testing.assert_allclose(y, _mlp_reference(x), rtol=1e-5, atol=1e-6)
    params_bytes = sum(p.numel() * 4 for p in Mlp().parameters())
    assert backend.memory_bytes() == params_bytes


def test_export_names_from_signature_and_dict_keys(root: Path) -> None:
    backend = TorchBackend()
    backend.load(root / "heads" / "1", config(name="heads"), CPU)
    assert [s.name for s in backend.inputs] == ["a", "b"]
    assert [s.name for s in backend.outputs] == ["total", "diff"]
    a, b = np.ones((3, 5), np.float32), np.full((3, 5), 2, np.float32)
    out = backend.infer({"a": a, "b": b})
    np.testing.assert_array_equal(out["total"], a + b)
    np.testing.assert_array_equal(out["diff"], a - b)


def test_export_config_renames_positionally(root: Path) -> None:
    text = """
    max_batch_size: 8
    input [{ name: "LEFT" data_type: TYPE_FP32 dims: [5] },
           { name: "RIGHT" data_type: TYPE_FP32 dims: [5] }]
    output [{ name: "SUM" data_type: TYPE_FP32 dims: [5] },
            { name: "DIFF" data_type: TYPE_FP32 dims: [5] }]
    """
    backend = load_backend(root / "heads" / "1", config(text, "heads"), CPU)
    a, b = np.ones((2, 5), np.float32), np.full((2, 5), 3, np.float32)
    out = backend.infer({"LEFT": a, "RIGHT": b})
    np.testing.assert_array_equal(out["SUM"], a + b)
    np.testing.assert_array_equal(out["DIFF"], a - b)


def test_export_config_with_wrong_count_is_refused(root: Path) -> None:
    text = 'input [{ name: "ONLY" data_type: TYPE_FP32 dims: [5] }]'
    with pytest.raises(
        ConfigError, match=r"declares 1 inputs \(ONLY\); the exported program has 2"
    ):
        TorchBackend().load(root / "heads" / "1", config(text, "heads"), CPU)


def test_export_config_with_wrong_dims_is_refused(root: Path) -> None:
    text = """
    max_batch_size: 4
    input [{ name: "x" data_type: TYPE_FP32 dims: [7] }]
    output [{ name: "y" data_type: TYPE_FP32 dims: [3] }]
    """
    with pytest.raises(ConfigError, match=r"input 'x' dims: the model file has \[4\]"):
        load_backend(root / "mlp" / "1", config(text, "mlp"), CPU)


def test_torchscript_is_positional_with_triton_index_names(root: Path) -> None:
    # INPUT__1 listed first: the __<index> suffix, not the config order, gives the position.
    text = """
    platform: "pytorch_libtorch"
    max_batch_size: 4
    input [{ name: "INPUT__1" data_type: TYPE_FP32 dims: [2] },
           { name: "INPUT__0" data_type: TYPE_FP32 dims: [2] }]
    output [{ name: "OUT_A" data_type: TYPE_FP32 dims: [2] },
            { name: "OUT_B" data_type: TYPE_FP32 dims: [2] }]
    """
    backend = load_backend(root / "script" / "1", config(text, "script"), CPU)
    a = np.array([[1, 2]], np.float32)
    b = np.array([[10, 20]], np.float32)
    out = backend.infer({"INPUT__0": a, "INPUT__1": b})
    np.testing.assert_array_equal(out["OUT_A"], a * 2 + b)
    np.testing.assert_array_equal(out["OUT_B"], a - b)


def test_torchscript_matches_forward_argument_names(root: Path) -> None:
    text = 'platform: "pytorch"\ninput [{ name: "b" }, { name: "a" }]'
    backend = TorchBackend()
    backend.load(root / "script" / "1", config(text, "script"), CPU)
    assert backend.inputs == [] and backend.max_batch_size is None  # TorchScript cannot tell
    a, b = np.array([1.0], np.float32), np.array([5.0], np.float32)
    out = backend.infer({"a": a, "b": b})
    assert list(out) == ["output__0", "output__1"]
    np.testing.assert_array_equal(out["output__0"], [7.0])


def test_autocast_bf16_returns_declared_fp32(root: Path) -> None:
    backend = TorchBackend()
    backend.load(root / "mlp" / "1", config(params(autocast="bf16"), "mlp"), CPU)
    x = np.random.default_rng(0).standard_normal((6, 4), dtype=np.float32)
    y = backend.infer({"x": x})["output__0"]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, _mlp_reference(x), rtol=0.05, atol=0.05)


def test_torch_compile_runs_the_program(root: Path) -> None:
    # The eager backend exercises torch.compile's capture without a C++ toolchain build.
    text = params(torch_compile="true", torch_compile_backend="eager")
    backend = TorchBackend()
    backend.load(root / "mlp" / "1", config(text, "mlp"), CPU)
    assert backend._call is not backend._module  # wrapped by torch.compile
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(backend.infer({"x": x})["output__0"], _mlp_reference(x), rtol=1e-5)


def test_intra_op_thread_count_sets_torch_threads(root: Path) -> None:
    before = torch.get_num_threads()
    try:
        TorchBackend().load(root / "mlp" / "1", config(params(INTRA_OP_THREAD_COUNT="1")), CPU)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_read_only_and_bad_inputs(root: Path) -> None:
    backend = TorchBackend()
    backend.load(root / "mlp" / "1", config(name="mlp"), CPU)
    x = np.ones((2, 4), np.float32)
    x.setflags(write=False)  # decoded request buffers are read-only: no warning, no failure
    assert backend.infer({"x": x})["output__0"].shape == (2, 3)
    with pytest.raises(ModelExecutionError) as info:
        backend.infer({"x": np.ones((2, 5), np.float32)})
    message = str(info.value)
    assert message.startswith("model 'mlp' version 1: PyTorch failed: ")
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    ("model", "text", "device", "expected"),
    [
        ("missing", "", CPU, r"model 'missing' version 1: expected file 'model.pt' is missing$"),
        (
            "mlp",
            'platform: "pytorch_libtorch"',
            CPU,
            r"expected file 'model.pt' is missing \('model.pt2' is there: set platform: "
            r"\"accelserve_torch_export\"\)",
        ),
        ("mlp", "", ABSENT_CUDA, rf"device {ABSENT_CUDA} is not available to PyTorch here"),
        ("mlp", "", Device("tpu", 0), r"runs on cpu or cuda:N; received tpu:0"),
        ("mlp", params(autocast="fp8"), CPU, r"'autocast': expected fp16, bf16 or none; .*'fp8'"),
        ("mlp", params(torch_compile="maybe"), CPU, r"'torch_compile': expected true or false"),
        ("mlp", params(intra_op_thread_count="x"), CPU, r"expected an integer >= 0; received 'x'"),
        (
            "script",
            'platform: "pytorch"\n' + params(torch_compile="true"),
            CPU,
            r"'torch_compile': applies to torch.export programs",
        ),
        (
            "static",
            "max_batch_size: 8",
            CPU,
            r"max_batch_size is 8 but tensor 'x' of the exported program has no dynamic first",
        ),
        (
            "script",
            'platform: "pytorch"\ninput [{ name: "a" }, { name: "b" }, { name: "c" }]',
            CPU,
            r"declares 3 inputs \(a, b, c\); forward takes 2 to 2 \(a, b\)",
        ),
    ],
)
def test_misconfiguration_is_a_clear_error(
    root: Path, model: str, text: str, device: Device, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected) as info:
        TorchBackend().load(version_dir(root, model), config(text, model), device)
    assert str(root) not in str(info.value)


def test_a_file_that_is_not_a_program_is_refused(tmp_path: Path) -> None:
    directory = version_dir(tmp_path, "junk")
    (directory / "model.pt2").write_bytes(b"not a zip archive")
    with pytest.raises(ConfigError, match=r"'model.pt2' is not a torch.export program"):
        TorchBackend().load(directory, config(name="junk"), CPU)
    (directory / "model.pt").write_bytes(b"not a zip archive")
    with pytest.raises(ConfigError, match=r"'model.pt' is not a TorchScript module"):
        TorchBackend().load(directory, config('platform: "pytorch_libtorch"', "junk"), CPU)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("autocast", ["none", "fp16"])
def test_export_on_cuda(root: Path, autocast: str) -> None:
    backend = TorchBackend()
    backend.load(root / "mlp" / "1", config(params(autocast=autocast), "mlp"), Device("cuda", 0))
    x = np.random.default_rng(3).standard_normal((16, 4), dtype=np.float32)
    y = backend.infer({"x": x})["output__0"]
    assert y.dtype == np.float32
    tolerance = 1e-5 if autocast == "none" else 2e-2
    np.testing.assert_allclose(y, _mlp_reference(x), rtol=tolerance, atol=tolerance)
    assert backend.memory_bytes() == sum(p.numel() * 4 for p in Mlp().parameters())
    backend.unload()


@pytest.mark.gpu
@needs_cuda
def test_torchscript_on_cuda(root: Path) -> None:
    backend = TorchBackend()
    backend.load(root / "script" / "1", config('platform: "pytorch"', "script"), Device("cuda", 0))
    a, b = np.array([1.0, 2.0], np.float32), np.array([5.0, 7.0], np.float32)
    out = backend.infer({"a": a, "b": b})
    np.testing.assert_array_equal(out["output__0"], a * 2 + b)
