"""Triton's ``ensemble`` platform: a pipeline of models wired by ``ensemble_scheduling`` steps.

Each step names a model of the repository, an ``input_map`` (the step model's input name ->
an ensemble tensor name) and an ``output_map`` (the step model's output name -> an ensemble
tensor name). A request's tensors flow through the steps in dependency order; each step is one
ordinary request to its model, so it is checked against that model's config and batched by that
model's own scheduler with whatever other requests reach it at the same time.

One extension to Triton: an ensemble input marked ``optional`` may also be produced by a step
(e.g. ``input_ids``, produced by the tokenizer from ``text``). A request that brings the tensor
itself skips the steps it makes unnecessary; asking for an output that the given inputs cannot
produce is an error naming the missing input. Without explicit outputs, a request gets every
ensemble output its inputs can produce.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from accelserve.config import input_specs, output_specs, select_versions
from accelserve.errors import (
    AccelServeError,
    ConfigError,
    InvalidArgumentError,
    ModelExecutionError,
    UnavailableError,
)
from accelserve.model import READY, ModelLookup, ModelVersion
from accelserve.stats import ModelStats, failure_reason
from accelserve.types import InferRequest, TensorSpec
from accelserve.validation import prepare_inputs

if TYPE_CHECKING:
    from accelserve.protocol.model_config_pb2 import ModelConfig

_NS = time.perf_counter_ns
# Ensembles being loaded in this task: a step naming one of them is a cycle (it would deadlock).
_LOADING: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "accelserve_ensembles_loading", default=()
)


@dataclass(frozen=True)
class Step:
    model: str
    version: str  # "" = the latest
    inputs: tuple[tuple[str, str], ...]  # (step model input, ensemble tensor)
    outputs: tuple[tuple[str, str], ...]  # (step model output, ensemble tensor)


@dataclass
class Graph:
    """The validated step graph of one ensemble config, and its per-request plans (cached)."""

    name: str
    steps: list[Step]
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    producer: dict[str, int] = field(default_factory=dict)  # tensor -> index of its step
    _plans: dict[tuple[frozenset[str], tuple[str, ...]], tuple[list[list[int]], list[str]]] = field(
        default_factory=dict
    )

    @classmethod
    def from_config(cls, config: ModelConfig) -> Graph:
        name = config.name
        where = f"model '{name}' ensemble_scheduling"
        if not config.ensemble_scheduling.step:
            raise ConfigError(f"{where}: expected at least one step; received none")
        steps = []
        for i, s in enumerate(config.ensemble_scheduling.step):
            if not s.model_name:
                raise ConfigError(f"{where} step {i}: model_name is empty")
            if s.model_name == name:
                raise ConfigError(f"{where} step {i}: the ensemble cannot be its own step")
            if not s.input_map or not s.output_map:
                raise ConfigError(
                    f"{where} step {i} ('{s.model_name}'): expected a non-empty input_map and "
                    "output_map"
                )
            version = str(s.model_version) if s.model_version > 0 else ""
            steps.append(
                Step(
                    s.model_name,
                    version,
                    tuple(sorted(s.input_map.items())),
                    tuple(sorted(s.output_map.items())),
                )
            )
        graph = cls(
            name,
            steps,
            {s.name: s for s in input_specs(config)},
            {s.name: s for s in output_specs(config)},
        )
        graph._check()
        return graph

    def _check(self) -> None:
        where = f"model '{self.name}' ensemble_scheduling"
        for i, step in enumerate(self.steps):
            for _, tensor in step.outputs:
                if tensor in self.producer:
                    other = self.steps[self.producer[tensor]].model
                    raise ConfigError(
                        f"{where}: tensor '{tensor}' is produced by both step '{other}' and "
                        f"step '{step.model}'; expected one producer"
                    )
                spec = self.inputs.get(tensor)
                if spec is not None and not spec.optional:
                    raise ConfigError(
                        f"{where}: step '{step.model}' produces '{tensor}', which is a required "
                        "ensemble input; mark the input optional to let requests skip the step"
                    )
                self.producer[tensor] = i
        for step in self.steps:
            for _, tensor in step.inputs:
                if tensor not in self.inputs and tensor not in self.producer:
                    raise ConfigError(
                        f"{where}: step '{step.model}' reads '{tensor}', which is neither an "
                        "ensemble input nor the output of a step"
                    )
        for tensor in self.outputs:
            if tensor not in self.producer and tensor not in self.inputs:
                raise ConfigError(
                    f"{where}: ensemble output '{tensor}' is not produced by any step"
                )
        self._order()  # raises on a cycle

    def _order(self) -> list[int]:
        order: list[int] = []
        state: dict[int, int] = {}  # 1 = visiting, 2 = done

        def visit(i: int) -> None:
            if state.get(i) == 2:
                return
            if state.get(i) == 1:
                raise ConfigError(
                    f"model '{self.name}' ensemble_scheduling: the steps form a cycle through "
                    f"step '{self.steps[i].model}'"
                )
            state[i] = 1
            for _, tensor in self.steps[i].inputs:
                if tensor in self.producer:
                    visit(self.producer[tensor])
            state[i] = 2
            order.append(i)

        for i in range(len(self.steps)):
            visit(i)
        return order

    def plan(
        self, given: frozenset[str], wanted: tuple[str, ...]
    ) -> tuple[list[list[int]], list[str]]:
        """Which steps run, grouped in waves that may run together, and which ensemble outputs
        the request gets. ``wanted`` empty: every output the given inputs can produce."""
        key = (given, wanted)
        cached = self._plans.get(key)
        if cached is None:
            cached = self._plans[key] = self._make_plan(given, wanted)
        return cached

    def _make_plan(
        self, given: frozenset[str], wanted: tuple[str, ...]
    ) -> tuple[list[list[int]], list[str]]:
        producible: dict[str, bool] = {}

        def can(tensor: str, seen: frozenset[str] = frozenset()) -> bool:
            if tensor in given:
                return True
            if tensor in producible:
                return producible[tensor]
            index = self.producer.get(tensor)
            ok = (
                index is not None
                and tensor not in seen
                and all(can(t, seen | {tensor}) for _, t in self.steps[index].inputs)
            )
            producible[tensor] = ok
            return ok

        outputs = list(wanted) if wanted else [t for t in self.outputs if can(t)]
        if not outputs:
            outputs = list(self.outputs)  # report why the first one cannot be made
        run: set[int] = set()

        def need(tensor: str) -> None:
            if tensor in given:
                return
            index = self.producer.get(tensor)
            if index is None or not can(tensor):
                raise InvalidArgumentError(self._missing(tensor, given))
            if index not in run:
                run.add(index)
                for _, t in self.steps[index].inputs:
                    need(t)

        for tensor in outputs:
            need(tensor)
        for index in run:
            for _, tensor in self.steps[index].outputs:
                if tensor in given:
                    raise InvalidArgumentError(
                        f"model '{self.name}': input '{tensor}' is also what step "
                        f"'{self.steps[index].model}' computes for this request; send either "
                        f"'{tensor}' or the inputs that step reads"
                    )
        waves: list[list[int]] = []
        done = set(given)
        pending = [i for i in self._order() if i in run]
        while pending:
            wave = [i for i in pending if all(t in done for _, t in self.steps[i].inputs)]
            waves.append(wave)
            for i in wave:
                done.update(t for _, t in self.steps[i].outputs)
            pending = [i for i in pending if i not in wave]
        return waves, outputs

    def _missing(self, tensor: str, given: frozenset[str]) -> str:
        """Why ``tensor`` cannot be computed: the deepest step whose inputs are missing."""
        have = ", ".join(f"'{t}'" for t in sorted(given)) or "none"
        blocked, missing = "", [tensor]
        current, seen = tensor, set()
        while current in self.producer and current not in seen:
            seen.add(current)
            step = self.steps[self.producer[current]]
            lacking = [t for _, t in step.inputs if t not in given]
            if not lacking:
                break
            blocked, missing = step.model, lacking
            current = lacking[0]
        need = " and ".join(f"'{t}'" for t in missing)
        at = f"step '{blocked}' needs {need}" if blocked else f"it needs {need}"
        return (
            f"model '{self.name}': output '{tensor}' cannot be computed from the inputs given "
            f"({have}): {at}; the model's inputs are {', '.join(self.inputs)}"
        )


def _rows(inputs: dict[str, np.ndarray]) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1


class EnsembleRunner:
    """Runs one ensemble version's requests through its steps' own runners."""

    def __init__(
        self,
        graph: Graph,
        get_model: Callable[[str, str], ModelVersion],
        stats: ModelStats,
        batched: bool,
    ) -> None:
        self.graph = graph
        self._get_model = get_model
        self.stats = stats
        self._batched = batched
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        start = _NS()
        if self._stopping:
            error = UnavailableError(f"model '{self.graph.name}' is stopping")
            self.stats.record_failure(failure_reason(error), _NS() - start)
            raise error
        stats = self.stats
        stats.pending += 1
        self._idle.clear()
        try:
            tensors = dict(request.inputs)
            waves, outputs = self.graph.plan(frozenset(tensors), tuple(request.outputs))
            for wave in waves:
                steps = [self.graph.steps[i] for i in wave]
                if len(steps) == 1:
                    results = [await self._step(steps[0], tensors, request)]
                else:
                    results = await asyncio.gather(
                        *(self._step(s, tensors, request) for s in steps)
                    )
                for result in results:
                    tensors.update(result)
            answer = {name: tensors[name] for name in outputs}
        except BaseException as exc:
            stats.record_failure(failure_reason(exc), _NS() - start)
            raise
        finally:
            stats.pending -= 1
            if not stats.pending:
                self._idle.set()
        elapsed = _NS() - start
        stats.success.add(elapsed)
        stats.compute_infer.add(elapsed)  # the pipeline's time; each step counts its own parts
        stats.execution_count += 1
        stats.inference_count += _rows(request.inputs) if self._batched else 1
        stats.last_inference_ms = time.time_ns() // 1_000_000
        return answer

    async def _step(
        self,
        step: Step,
        tensors: dict[str, np.ndarray],
        request: InferRequest,
    ) -> dict[str, np.ndarray]:
        model = self._get_model(step.model, step.version)
        step_request = InferRequest(
            inputs={name: tensors[tensor] for name, tensor in step.inputs},
            id=request.id,
            timeout_us=request.timeout_us,
        )
        prepare_inputs(model, step_request)
        produced = await model.runner.infer(step_request)
        return collect_outputs(self.graph.name, step, produced)

    async def stop(self) -> None:
        """Refuse new requests and wait for the accepted ones (the steps drain on their own)."""
        self._stopping = True
        await self._idle.wait()


def collect_outputs(
    name: str, step: Step, produced: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    try:
        return {tensor: produced[output] for output, tensor in step.outputs}
    except KeyError as exc:
        raise ModelExecutionError(
            f"model '{name}': step '{step.model}' returned no output {exc}; it returned "
            f"{', '.join(produced)}"
        ) from None


async def load_ensemble(
    model_dir: Path, config: ModelConfig, models: ModelLookup
) -> dict[str, ModelVersion]:
    """Validate an ensemble against its step models (loaded through ``models`` first when
    they are not yet) and build its versions."""
    graph = Graph.from_config(config)
    loading = _LOADING.get()
    token = _LOADING.set((*loading, config.name))
    try:
        for step in graph.steps:
            if step.model in loading or step.model == config.name:
                raise ConfigError(
                    f"model '{config.name}': step '{step.model}' is an ensemble that contains "
                    f"'{config.name}' (a cycle)"
                )
            record = await models.require(step.model)  # load order is alphabetical
            if record.state != READY:
                reason = f": {record.reason}" if record.reason else ""
                raise ConfigError(
                    f"model '{config.name}': step model '{step.model}' is {record.state}{reason}"
                )
            _check_step(config, graph, step, models.get(step.model, step.version))
    except AccelServeError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"model '{config.name}': {exc.message}") from None
    finally:
        _LOADING.reset(token)
    versions: dict[str, ModelVersion] = {}
    for version in select_versions(model_dir, config):
        stats = ModelStats(config.name, version)
        versions[version] = ModelVersion(
            name=config.name,
            version=version,
            config=config,
            inputs=graph.inputs,
            outputs=graph.outputs,
            runner=EnsembleRunner(graph, models.get, stats, config.max_batch_size > 0),
            stats=stats,
            placements=[{"step": s.model, "version": s.version or "latest"} for s in graph.steps],
        )
    return versions


def _check_step(config: ModelConfig, graph: Graph, step: Step, model: ModelVersion) -> None:
    where = f"model '{config.name}' step '{step.model}'"
    for name, tensor in step.inputs:
        spec = model.inputs.get(name)
        if spec is None:
            raise ConfigError(
                f"{where}: input_map names input '{name}'; the model's inputs are "
                f"{', '.join(model.inputs)}"
            )
        declared = graph.inputs.get(tensor)
        if declared is not None and declared.datatype != spec.datatype:
            raise ConfigError(
                f"{where}: input '{name}' is {spec.datatype}; ensemble input '{tensor}' is "
                f"{declared.datatype}"
            )
    for name, tensor in step.outputs:
        spec = model.outputs.get(name)
        if spec is None:
            raise ConfigError(
                f"{where}: output_map names output '{name}'; the model's outputs are "
                f"{', '.join(model.outputs)}"
            )
        declared = graph.outputs.get(tensor) or graph.inputs.get(tensor)
        if declared is not None and declared.datatype != spec.datatype:
            raise ConfigError(
                f"{where}: output '{name}' is {spec.datatype}; ensemble tensor '{tensor}' is "
                f"{declared.datatype}"
            )
    mbs, step_mbs = config.max_batch_size, model.config.max_batch_size
    if mbs > 0 and step_mbs < mbs:
        raise ConfigError(
            f"{where}: max_batch_size {step_mbs} is below the ensemble's max_batch_size {mbs}; "
            "expected the step to take every batch the ensemble accepts"
        )
