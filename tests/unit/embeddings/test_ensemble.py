"""Ensembles: graph validation and planning (pure), and a real repository running a two-step
pipeline of `simple` ONNX models, each step through its own scheduler."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from accelserve.config import parse_config
from accelserve.ensemble import Graph
from accelserve.errors import ConfigError, InvalidArgumentError
from accelserve.model import READY, UNAVAILABLE
from accelserve.repository import ModelRepository
from accelserve.tools.examples.build import build_simple
from accelserve.types import InferRequest

ROOT = Path(__file__).resolve().parents[3]
TWICE = """
name: "twice"
platform: "ensemble"
max_batch_size: 8
input [
  { name: "A" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "B" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "SUM" data_type: TYPE_INT32 dims: [ 16 ] optional: true },
  { name: "DIFF" data_type: TYPE_INT32 dims: [ 16 ] optional: true }
]
output [
  { name: "TWO_A" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "TWO_B" data_type: TYPE_INT32 dims: [ 16 ] }
]
ensemble_scheduling {
  step [
    {
      model_name: "simple"
      model_version: -1
      input_map { key: "INPUT0" value: "A" }
      input_map { key: "INPUT1" value: "B" }
      output_map { key: "OUTPUT0" value: "SUM" }
      output_map { key: "OUTPUT1" value: "DIFF" }
    },
    {
      model_name: "simple"
      model_version: -1
      input_map { key: "INPUT0" value: "SUM" }
      input_map { key: "INPUT1" value: "DIFF" }
      output_map { key: "OUTPUT0" value: "TWO_A" }
      output_map { key: "OUTPUT1" value: "TWO_B" }
    }
  ]
}
"""


def test_plan_runs_every_step_in_order() -> None:
    graph = Graph.from_config(parse_config(TWICE))
    waves, outputs = graph.plan(frozenset({"A", "B"}), ())
    assert waves == [[0], [1]] and outputs == ["TWO_A", "TWO_B"]


def test_plan_skips_a_step_whose_outputs_are_given() -> None:
    graph = Graph.from_config(parse_config(TWICE))
    waves, _ = graph.plan(frozenset({"SUM", "DIFF"}), ("TWO_A",))
    assert waves == [[1]]


def test_plan_names_what_is_missing() -> None:
    graph = Graph.from_config(parse_config(TWICE))
    with pytest.raises(InvalidArgumentError) as info:
        graph.plan(frozenset({"A"}), ())
    message = str(info.value)
    assert "output 'TWO_A' cannot be computed from the inputs given ('A')" in message
    assert "step 'simple' needs 'B'" in message


def test_plan_refuses_a_tensor_given_and_computed() -> None:
    graph = Graph.from_config(parse_config(TWICE))
    with pytest.raises(InvalidArgumentError) as info:
        graph.plan(frozenset({"A", "B", "SUM"}), ())
    assert "input 'SUM' is also what step 'simple' computes" in str(info.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("optional: true }", "}", "produces 'SUM', which is a required ensemble input"),
        ('value: "TWO_B"', 'value: "TWO_A"', "tensor 'TWO_A' is produced by both step"),
        ('value: "DIFF" }\n      output_map', 'value: "NOPE" }\n      output_map', "reads 'NOPE'"),
        ('output_map { key: "OUTPUT1" value: "TWO_B" }', "", "output 'TWO_B' is not produced"),
        ('model_name: "simple"', 'model_name: "twice"', "cannot be its own step"),
        ('model_name: "simple"', 'model_name: ""', "model_name is empty"),
    ],
)
def test_invalid_graphs(old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Graph.from_config(parse_config(TWICE.replace(old, new, 1)))
    assert message in str(info.value)


def test_cycle_is_refused() -> None:
    text = TWICE.replace('value: "A" }', 'value: "TWO_A" }', 1)
    with pytest.raises(ConfigError) as info:
        Graph.from_config(parse_config(text))
    assert "the steps form a cycle" in str(info.value)


@pytest.fixture()
def repository(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    simple = root / "simple"
    simple.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "model_repository" / "simple" / "config.pbtxt", simple)
    build_simple(simple)
    (root / "twice" / "1").mkdir(parents=True)
    (root / "twice" / "config.pbtxt").write_text(TWICE)
    return root


def test_repository_runs_the_pipeline(repository: Path) -> None:
    async def main() -> None:
        repo = ModelRepository(repository, default_device="cpu")
        await repo.load_all()
        try:
            assert repo.models["twice"].state == READY, repo.models["twice"].reason
            model = repo.get("twice")
            rng = np.random.default_rng(1)
            pairs = [
                rng.integers(-99, 99, size=(2, rows, 16), dtype=np.int32) for rows in (1, 3, 2)
            ]
            requests = [InferRequest(inputs={"A": a, "B": b}) for a, b in pairs]
            results = await asyncio.gather(*(model.runner.infer(r) for r in requests))
            for (a, b), out in zip(pairs, results, strict=True):
                np.testing.assert_array_equal(out["TWO_A"], 2 * a)
                np.testing.assert_array_equal(out["TWO_B"], 2 * b)
            stats = model.stats.as_dict()
            assert stats["inference_count"] == 6 and stats["execution_count"] == 3
            steps = repo.get("simple").stats
            assert steps.inference_count == 12  # two steps x 6 rows, batched by `simple`
            assert steps.execution_count < 6
            partial = await model.runner.infer(
                InferRequest(inputs={"SUM": pairs[0][0], "DIFF": pairs[0][1]}, outputs=["TWO_A"])
            )
            np.testing.assert_array_equal(partial["TWO_A"], pairs[0][0] + pairs[0][1])
            with pytest.raises(InvalidArgumentError, match="needs 'B'"):
                await model.runner.infer(InferRequest(inputs={"A": pairs[0][0]}))
            assert model.stats.fail_reasons == {"REJECTED": 1}  # the client's fault
        finally:
            await repo.stop()

    asyncio.run(main())


def test_bad_step_makes_the_ensemble_unavailable(repository: Path) -> None:
    config = repository / "twice" / "config.pbtxt"
    config.write_text(TWICE.replace('key: "INPUT0" value: "A"', 'key: "IN0" value: "A"'))
    (repository / "loop" / "1").mkdir(parents=True)
    (repository / "loop" / "config.pbtxt").write_text(
        TWICE.replace('name: "twice"', 'name: "loop"').replace(
            'model_name: "simple"', 'model_name: "loop2"', 1
        )
    )
    (repository / "loop2" / "1").mkdir(parents=True)
    (repository / "loop2" / "config.pbtxt").write_text(
        TWICE.replace('name: "twice"', 'name: "loop2"').replace(
            'model_name: "simple"', 'model_name: "loop"', 1
        )
    )

    async def main() -> None:
        repo = ModelRepository(repository, default_device="cpu")
        await repo.load_all()
        try:
            record = repo.models["twice"]
            assert record.state == UNAVAILABLE
            assert (
                "input_map names input 'IN0'; the model's inputs are INPUT0, INPUT1"
                in record.reason
            )
            assert "(a cycle)" in repo.models["loop"].reason
            assert repo.models["simple"].state == READY
        finally:
            await repo.stop()

    asyncio.run(main())
