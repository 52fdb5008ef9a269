"""A data plane over models held in a dict, run by a fake runner: the data plane and the
frontends tested in process, without a repository folder, a backend or a server process."""

from __future__ import annotations

import numpy as np

from accelserve.config import input_specs, output_specs, parse_config
from accelserve.dataplane import DataPlane
from accelserve.errors import ModelNotFoundError, UnavailableError
from accelserve.load_overrides import LoadOverride
from accelserve.model import READY, UNAVAILABLE, ModelRecord, ModelVersion
from accelserve.stats import ModelStats
from accelserve.types import InferRequest

API_KEY = "secret-key"
# Triton's "simple" with rows of 4: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.
SIMPLE_CONFIG = """
name: "simple"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 4 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 4 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 4 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 4 ] }
]
"""


class FakeRunner:
    """Computes "simple"'s outputs, or raises ``error`` when one is set; keeps what it saw."""

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.requests: list[InferRequest] = []
        self.stopped = False

    async def infer(self, request: InferRequest) -> dict[str, np.ndarray]:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        a, b = request.inputs["INPUT0"], request.inputs["INPUT1"]
        return {"OUTPUT0": a + b, "OUTPUT1": a - b}

    async def stop(self) -> None:
        self.stopped = True


def simple_version(version: str = "1", name: str = "simple") -> ModelVersion:
    config = parse_config(SIMPLE_CONFIG.replace('"simple"', f'"{name}"'))
    return ModelVersion(
        name=name,
        version=version,
        config=config,
        inputs={s.name: s for s in input_specs(config)},
        outputs={s.name: s for s in output_specs(config)},
        runner=FakeRunner(),
        stats=ModelStats(name, version),
    )


class FakeRegistry:
    """The ``ModelRegistry`` contract over a dict. ``loadable`` holds what ``load`` finds (a
    name missing there fails to load, as a broken model does)."""

    def __init__(self, *records: ModelRecord) -> None:
        self.models: dict[str, ModelRecord] = {r.name: r for r in records}
        self.loadable: dict[str, list[ModelVersion]] = {}
        self.overrides: dict[str, LoadOverride | None] = {}  # what each load was given

    def get(self, name: str, version: str = "") -> ModelVersion:
        record = self.models.get(name)
        if record is None:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' is not found")
        if record.state != READY:
            raise UnavailableError(f"Request for unavailable model: '{name}' is {record.state}")
        if not version:
            return record.versions[max(record.versions, key=int)]
        if version not in record.versions:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' version {version}")
        return record.versions[version]

    def index(self) -> list[dict[str, str]]:
        return [
            {"name": r.name, "version": v, "state": r.state}
            for r in sorted(self.models.values(), key=lambda r: r.name)
            for v in sorted(r.versions, key=int) or [""]
        ]

    async def load(self, name: str, override: LoadOverride | None = None) -> ModelRecord:
        self.overrides[name] = override
        versions = self.loadable.get(name)
        if versions is None:
            record = ModelRecord(name, UNAVAILABLE, "no model file")
        else:
            record = ModelRecord(name, READY, versions={v.version: v for v in versions})
        self.models[name] = record
        return record

    async def unload(self, name: str) -> None:
        if name not in self.models:
            raise ModelNotFoundError(f"failed to unload '{name}': no such model is loaded")
        self.models[name] = ModelRecord(name, UNAVAILABLE, "unloaded")


def simple_dataplane(*, model_control: bool = False) -> DataPlane:
    """A started data plane serving "simple" (versions 1 and 2, READY) and "broken"
    (UNAVAILABLE, no versions)."""
    simple = ModelRecord("simple", READY, versions={v: simple_version(v) for v in ("1", "2")})
    broken = ModelRecord("broken", UNAVAILABLE, "model.onnx: no such file")
    dataplane = DataPlane(
        FakeRegistry(simple, broken),
        model_control=model_control,
        api_key=API_KEY if model_control else None,
    )
    dataplane.started = True
    return dataplane


def runner_of(dataplane: DataPlane, version: str = "2") -> FakeRunner:
    runner = dataplane.model("simple", version).runner
    assert isinstance(runner, FakeRunner)
    return runner
