"""accelserve.export on torch modules: torch.export (.pt2) and ONNX, checked after loading."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

import accelserve
from accelserve.tools.export.check import ExportMismatchError

RNG = np.random.default_rng(3)
X = RNG.standard_normal((1, 4)).astype(np.float32)


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(4, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


class TwoHeads(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": a + b, "scaled": a * 2}


class BatchSizeBaked(torch.nn.Module):
    """Scales by the batch size read as a Python float: the ONNX tracer freezes that number
    into the graph, so the export is right for one batch size only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.shape[0])


def test_pt2_round_trip_batches_and_serves_what_the_module_computes(tmp_path: Path) -> None:
    model = Mlp().eval()
    result = accelserve.export(
        model, tmp_path / "repo" / "mlp", example_inputs=(X,), max_batch_size=8, progress=False
    )
    assert (result.version, result.platform) == (1, "accelserve_torch_export")
    assert (tmp_path / "repo/mlp/1/model.pt2").is_file()
    text = (tmp_path / "repo/mlp/config.pbtxt").read_text()
    assert "max_batch_size: 8" in text and "dynamic_batching" in text
    x5 = RNG.standard_normal((5, 4)).astype(np.float32)
    with accelserve.load(str(tmp_path / "repo/mlp")) as loaded:
        assert loaded.inputs == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
        assert loaded.outputs == [{"name": "output__0", "datatype": "FP32", "shape": [-1, 3]}]
        got = loaded.infer({"x": x5})["output__0"]
    with torch.no_grad():
        want = model(torch.from_numpy(x5)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_onnx_round_trip_names_inputs_by_keyword_and_outputs_by_dict_key(tmp_path: Path) -> None:
    a, b = (RNG.standard_normal((2, 3)).astype(np.float32) for _ in range(2))
    result = accelserve.export(
        TwoHeads(),
        tmp_path / "r" / "heads",
        example_inputs={"b": b, "a": a},
        max_batch_size=4,
        format="onnx",
        progress=False,
    )
    assert result.platform == "onnxruntime_onnx" and result.max_difference is not None
    assert [i.name for i in result.config.input] == ["a", "b"]  # forward's order
    assert [o.name for o in result.config.output] == ["total", "scaled"]
    with accelserve.load(str(tmp_path / "r/heads")) as loaded:
        out = loaded.infer({"a": a[:1], "b": b[:1]})
    np.testing.assert_allclose(out["total"], a[:1] + b[:1], rtol=1e-6)
    np.testing.assert_allclose(out["scaled"], a[:1] * 2, rtol=1e-6)


def test_unbatched_export_keeps_whole_shapes_and_renames_tensors(tmp_path: Path) -> None:
    result = accelserve.export(
        Mlp().eval(),
        tmp_path / "r" / "m",
        example_inputs=np.ones((2, 4), np.float32),
        input_names=["features"],
        output_names=["logits"],
        format="onnx",
        progress=False,
    )
    assert result.config.max_batch_size == 0 and not result.config.HasField("dynamic_batching")
    assert list(result.config.input[0].dims) == [2, 4] and result.config.input[0].name == "features"
    assert result.config.output[0].name == "logits"


def test_next_free_version_and_the_existing_configs_own_fields_stay(tmp_path: Path) -> None:
    target = tmp_path / "r" / "m"
    accelserve.export(Mlp().eval(), target, example_inputs=X, format="onnx", progress=False)
    config = target / "config.pbtxt"
    config.write_text(config.read_text() + "instance_group [{ kind: KIND_CPU count: 2 }]\n")
    second = accelserve.export(
        Mlp().eval(), target, example_inputs=X, max_batch_size=2, format="onnx", progress=False
    )
    assert second.version == 2 and sorted(p.name for p in target.iterdir()) == [
        "1",
        "2",
        "config.pbtxt",
    ]
    assert second.config.instance_group[0].count == 2 and second.config.max_batch_size == 2


def test_onnx_export_that_bakes_the_batch_size_in_raises_and_writes_nothing(
    tmp_path: Path,
) -> None:
    with pytest.raises(ExportMismatchError) as caught:
        accelserve.export(
            BatchSizeBaked().eval(),
            tmp_path / "r" / "baked",
            example_inputs=np.ones((1, 3), np.float32),
            max_batch_size=4,
            format="onnx",
            progress=False,
        )
    error = caught.value
    assert error.output == "output__0" and error.max_difference == pytest.approx(1.0)
    assert "differs from the original by up to 1" in str(error)
    assert "Converting a tensor to a Python float" in str(error)  # the tracer's warning
    assert not (tmp_path / "r").exists()


def test_pt2_against_a_perturbed_reference_raises_with_the_largest_difference(
    tmp_path: Path,
) -> None:
    model = Mlp().eval()
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        perturbed.out.bias[1] += 0.5

    def reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return perturbed(torch.from_numpy(inputs["x"])).numpy()

    with pytest.raises(
        ExportMismatchError, match=r"output 'output__0' \(batch of 1\).*by up to 0\.5"
    ):
        accelserve.export(
            model,
            tmp_path / "r" / "m",
            example_inputs=X,
            max_batch_size=2,
            reference=reference,
            progress=False,
        )
    assert not (tmp_path / "r" / "m").exists()


def test_progress_is_printed_step_by_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    stream = io.StringIO()
    accelserve.export(
        Mlp().eval(),
        tmp_path / "r" / "m",
        example_inputs=X,
        max_batch_size=2,
        format="onnx",
        progress=stream,
    )
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[accelserve 1] exporting Mlp to model.onnx (ONNX)")
    assert any("comparing with the original on a batch of 2: done" in line for line in lines)
    assert "is ready; serve with: accelserve serve --model-repository" in lines[-1]
    assert capsys.readouterr().err == ""  # nothing on stderr when given a stream
