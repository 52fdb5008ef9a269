"""Model repository in Triton's layout: ``<repo>/<model>/config.pbtxt`` and
``<repo>/<model>/<version>/<model file>``.

Loading a model reads its config (or completes one from the model file), places backend
instances on devices as ``instance_group`` says, and wraps them in a scheduler. One broken model
never stops the others: it is recorded as UNAVAILABLE with the reason.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from accelserve.backends import FILE_PLATFORMS, backend_class
from accelserve.backends.base import Backend
from accelserve.backends.triton_python import is_triton_python
from accelserve.classification import read_labels
from accelserve.config import (
    complete_config,
    input_specs,
    instance_count,
    is_ensemble,
    output_specs,
    read_config,
    select_versions,
)
from accelserve.config import version_config as config_for_version
from accelserve.devices import Device, discover, parse_device, resolve_device
from accelserve.errors import (
    AccelServeError,
    ConfigError,
    DeviceError,
    ModelNotFoundError,
    UnavailableError,
)
from accelserve.load_overrides import LoadOverride, stage
from accelserve.model import (
    LOADING,
    READY,
    UNAVAILABLE,
    UNLOADING,
    ModelCaller,
    ModelRecord,
    ModelVersion,
    Runner,
)
from accelserve.names import check_model_name
from accelserve.protocol.model_config_pb2 import ModelConfig, ModelInstanceGroup
from accelserve.stats import ModelStats
from accelserve.types import TensorSpec
from accelserve.warmup import run_warmup, warmup_samples

if TYPE_CHECKING:
    from accelserve.scheduling.activity import CoreActivity

log = logging.getLogger("accelserve.repository")


class ModelRepository:
    def __init__(
        self,
        root: str | Path,
        default_device: str = "auto",
        activity: CoreActivity | None = None,
        default_max_queue_size: int = 0,
    ) -> None:
        from accelserve.scheduling.activity import CoreActivity

        self.root = Path(root)
        if not self.root.is_dir():
            raise ConfigError(f"model repository '{root}' is not a directory")
        self.default_device = default_device
        self.models: dict[str, ModelRecord] = {}
        # What models that call other models (Triton's BLS) call: the server's data plane.
        self.caller: ModelCaller | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # models loaded with an override: their staged directory, kept while they are loaded
        self._staged: dict[str, tempfile.TemporaryDirectory[str]] = {}
        # Shared by every model instance; the server's busy polling reads it.
        self.activity = CoreActivity() if activity is None else activity
        # Queue bound of models whose config sets no max_queue_size (0: unbounded).
        self.default_max_queue_size = default_max_queue_size

    def scan(self) -> list[str]:
        """Names of the model directories in the repository."""
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and _looks_like_model(p)
        )

    async def load_all(self) -> None:
        """Load every model: those with backends concurrently (their loads run in threads, and
        ONNX Runtime's session set-up, for one, releases the GIL while numba's imports hold it),
        then the ensembles one after another, once their steps are loaded."""
        names = self.scan()
        ensembles = [name for name in names if _is_ensemble(self.root / name)]
        await asyncio.gather(*(self.load(n) for n in names if n not in ensembles))
        for name in ensembles:
            if name not in self.models:  # an ensemble loaded it as a step: once is enough
                await self.load(name)

    async def load(self, name: str, override: LoadOverride | None = None) -> ModelRecord:
        """(Re)load a model, from the repository or as ``override`` says (another config,
        uploaded files: ``load_overrides``); failures are recorded on the record, not raised."""
        check_model_name(name)  # before the name reaches the file system
        model_dir = self.root / name
        if not model_dir.is_dir() and (override is None or not override.files):
            raise ModelNotFoundError(f"failed to load '{name}': no such model in the repository")
        async with self._locks.setdefault(name, asyncio.Lock()):
            old = self.models.get(name)
            record = ModelRecord(name, state=LOADING)
            self.models[name] = record
            if old is not None:
                await _stop_versions(old)
            self._drop_staging(name)
            if override is not None:
                staging = stage(name, model_dir if model_dir.is_dir() else None, override)
                self._staged[name] = staging
                model_dir = Path(staging.name) / name
            try:
                record.versions = await load_versions(model_dir, self.default_device, self)
                record.state = READY
            except AccelServeError as exc:
                record.state, record.reason = UNAVAILABLE, exc.message
                log.error("model '%s' is UNAVAILABLE: %s", name, exc.message)
            except Exception as exc:  # a broken model file must not take the server down
                record.state = UNAVAILABLE
                record.reason = f"{type(exc).__name__}: {exc}"
                log.exception("model '%s' failed to load", name)
            return record

    async def require(self, name: str) -> ModelRecord:
        """The model's record, loaded first if it has not been (a step of an ensemble that
        sorts before the step's model)."""
        record = self.models.get(name)
        return record if record is not None else await self.load(name)

    async def unload(self, name: str) -> None:
        record = self.models.get(name)
        if record is None:
            raise ModelNotFoundError(f"failed to unload '{name}': no such model is loaded")
        async with self._locks.setdefault(name, asyncio.Lock()):
            record.state = UNLOADING
            await _stop_versions(record)
            record.state, record.reason, record.versions = UNAVAILABLE, "unloaded", {}
            self._drop_staging(name)

    async def stop(self) -> None:
        for record in self.models.values():
            await _stop_versions(record)
        for name in list(self._staged):
            self._drop_staging(name)

    async def load_startup(self, names: Sequence[str]) -> None:
        """Explicit model control's start-up: load the models named (``*``: all of them);
        a name the repository lacks stops the start."""
        if "*" in names:
            await self.load_all()
            return
        known = set(self.scan())
        missing = [n for n in names if n not in known]
        if missing:
            raise ModelNotFoundError(
                f"--load-model {', '.join(missing)}: no such model in the repository "
                f"'{self.root}'; found {', '.join(sorted(known)) or 'none'}"
            )
        chosen = list(dict.fromkeys(names))
        ensembles = [n for n in chosen if _is_ensemble(self.root / n)]
        await asyncio.gather(*(self.load(n) for n in chosen if n not in ensembles))
        for name in ensembles:  # after their steps, which they load if not named
            await self.load(name)

    def _drop_staging(self, name: str) -> None:
        staging = self._staged.pop(name, None)
        if staging is not None:
            staging.cleanup()

    def get(self, name: str, version: str = "") -> ModelVersion:
        record = self.models.get(name)
        if record is None:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' is not found")
        if record.state != READY:
            reason = f": {record.reason}" if record.reason else ""
            raise UnavailableError(
                f"Request for unavailable model: '{name}' is {record.state}{reason}"
            )
        if not version:
            return record.versions[max(record.versions, key=int)]
        try:
            return record.versions[version]
        except KeyError:
            raise ModelNotFoundError(
                f"Request for unknown model: '{name}' version {version} is not found"
            ) from None

    def index(self) -> list[dict[str, str]]:
        rows = []
        names = set(self.scan()) | set(self.models)
        for name in sorted(names):
            record = self.models.get(name)
            if record is None:
                rows.append({"name": name, "state": UNAVAILABLE, "reason": "not loaded"})
                continue
            versions = sorted(record.versions, key=int) or [""]
            for version in versions:
                row = {"name": name, "version": version, "state": record.state}
                if record.reason:
                    row["reason"] = record.reason
                rows.append(row)
        return rows


def _is_ensemble(model_dir: Path) -> bool:
    """Whether the model's config makes it an ensemble (a config that cannot be read: no; its
    load records why)."""
    try:
        config = read_config(model_dir)
    except AccelServeError:
        return False
    return is_ensemble(config)


def _looks_like_model(path: Path) -> bool:
    return (path / "config.pbtxt").is_file() or any(
        child.is_dir() and child.name.isdigit() for child in path.iterdir()
    )


async def _stop_versions(record: ModelRecord) -> None:
    for version in record.versions.values():
        await version.runner.stop()


def platform_of(config: ModelConfig, version_dir: Path) -> str:
    if config.platform or config.backend:
        return config.platform or config.backend
    filename = config.default_model_filename
    for candidate, platform in FILE_PLATFORMS.items():
        if (filename and filename == candidate) or (
            not filename and (version_dir / candidate).exists()
        ):
            return platform
    raise ConfigError(
        f"model '{config.name}': the config names no platform or backend and version "
        f"{version_dir.name} has none of {', '.join(FILE_PLATFORMS)}"
    )


def instance_devices(
    config: ModelConfig, default_device: str, present: Sequence[Device] | None = None
) -> list[Device]:
    """One device per instance, from ``instance_group``, among the ``present`` devices (this
    host's when None).

    - no ``instance_group``: one instance on ``default_device``;
    - KIND_GPU: ``count`` instances on each GPU in ``gpus`` (all GPUs here when empty), as in
      Triton, so ``{count: 2, gpus: [0, 1]}`` is 4 instances;
    - KIND_CPU: ``count`` instances spread round-robin over the host devices (``cpu:0`` ..
      ``cpu:K-1`` under ``XLA_FLAGS=--xla_force_host_platform_device_count=K``, else all on
      ``cpu:0``), continuing across groups;
    - KIND_AUTO: KIND_GPU when this host has a GPU, else KIND_CPU;
    - KIND_MODEL: the model places itself; accelserve uses ``default_device``.
    """
    if present is None:
        present = [info.device for info in discover()]
    if not config.instance_group:
        return [resolve_device(parse_device(default_device), present)]
    devices: list[Device] = []
    gpus_present = [d.index for d in present if d.kind == "cuda"]
    hosts = max(1, sum(1 for d in present if d.kind == "cpu"))
    next_host = 0
    for position, group in enumerate(config.instance_group):
        count = instance_count(config, position)
        kind = group.kind
        if kind == ModelInstanceGroup.KIND_AUTO:
            kind = ModelInstanceGroup.KIND_GPU if gpus_present else ModelInstanceGroup.KIND_CPU
        if kind == ModelInstanceGroup.KIND_CPU:
            for _ in range(count):
                devices.append(Device("cpu", next_host % hosts))
                next_host += 1
        elif kind == ModelInstanceGroup.KIND_GPU:
            for gpu in list(group.gpus) or gpus_present or [0]:
                device = _check_gpu(Device("cuda", gpu), present, config, position)
                devices += [device] * count
        else:
            devices += [resolve_device(parse_device(default_device), present)] * count
    return devices


def _check_gpu(
    device: Device, present: Sequence[Device], config: ModelConfig, position: int
) -> Device:
    try:
        return resolve_device(device, present)
    except DeviceError as exc:
        raise DeviceError(
            f"model '{config.name}' instance_group[{position}] gpus: {exc.message}"
        ) from None


def plan_placements(root: str | Path, default_device: str = "auto") -> list[dict[str, Any]]:
    """Where each model's instances would be placed, read from the configs alone (nothing is
    loaded): ``[{"model", "devices": [...]}]`` or ``{"model", "error"}`` per model."""
    repository = ModelRepository(root, default_device)
    rows: list[dict[str, Any]] = []
    for name in repository.scan():
        try:
            config = read_config(repository.root / name)
            if is_ensemble(config):
                rows.append({"model": name, "devices": [], "ensemble": True})
                continue
            devices = instance_devices(config, default_device)
        except AccelServeError as exc:
            rows.append({"model": name, "error": exc.message})
            continue
        rows.append({"model": name, "devices": [str(d) for d in devices]})
    return rows


VersionLoader = Callable[
    [Path, ModelConfig, str, "ModelRepository"], Awaitable[dict[str, ModelVersion]]
]


async def load_versions(
    model_dir: Path, default_device: str, repository: ModelRepository
) -> dict[str, ModelVersion]:
    """Load the versions of one model: a platform built on other models through its row of
    ``PLATFORMS``, any other platform as backend instances behind a scheduler."""
    config = read_config(model_dir)
    platform = "ensemble" if is_ensemble(config) else config.platform
    if not platform and is_triton_python(model_dir, config):
        platform = "triton_python"
    elif config.model_transaction_policy.decoupled:
        raise ConfigError(
            f"model '{config.name}': model_transaction_policy.decoupled: only Python models "
            'in Triton\'s style (class TritonPythonModel, backend "python") can be decoupled'
        )
    loader = PLATFORMS.get(platform, _load_backend_versions)
    return await loader(model_dir, config, default_device, repository)


async def _load_ensemble(
    model_dir: Path, config: ModelConfig, default_device: str, repository: ModelRepository
) -> dict[str, ModelVersion]:
    from accelserve.ensemble import load_ensemble

    # An ensemble has no backend: its runner calls the step models through the repository.
    return await load_ensemble(model_dir, config, repository)


async def _load_backend_versions(
    model_dir: Path, config: ModelConfig, default_device: str, repository: ModelRepository
) -> dict[str, ModelVersion]:
    from accelserve.scheduling.instances import ModelInstance
    from accelserve.scheduling.policy import BatchingPolicy
    from accelserve.scheduling.scheduler import Scheduler
    from accelserve.scheduling.sequence_batcher import SequenceBatcher
    from accelserve.scheduling.sequence_config import SequencePolicy
    from accelserve.validation import value_checks

    devices = instance_devices(config, default_device)
    labels = read_labels(model_dir, config)
    versions: dict[str, ModelVersion] = {}
    try:
        for version in select_versions(model_dir, config):
            version_config = config_for_version(config, model_dir / version)
            backends: list[Backend] = []
            try:
                for device in devices:
                    backends.append(
                        await asyncio.to_thread(
                            load_backend, model_dir / version, version_config, device
                        )
                    )
                policy = BatchingPolicy.from_config(version_config)
                sequences = (
                    SequencePolicy.from_config(version_config)
                    if version_config.HasField("sequence_batching")
                    else None
                )
                value_checks(version_config)  # a bad declaration fails the load, not a request
                # model_warmup: every instance runs the samples before the version is READY
                samples = warmup_samples(model_dir, version_config)
                await run_warmup(config.name, version, samples, backends)
            except BaseException:
                for backend in backends:
                    backend.unload()
                raise
            stats = ModelStats(config.name, version)
            names = [f"{config.name}_{i}" for i in range(len(backends))]
            instances = [
                ModelInstance(n, b, activity=repository.activity)
                for n, b in zip(names, backends, strict=True)
            ]
            runner: Runner = (
                Scheduler(
                    config.name,
                    policy,
                    instances,
                    stats,
                    default_max_queue_size=repository.default_max_queue_size,
                )
                if sequences is None
                else SequenceBatcher(config.name, sequences, instances, stats)
            )
            versions[version] = ModelVersion(
                name=config.name,
                version=version,
                config=version_config,
                inputs={s.name: s for s in input_specs(version_config)},
                outputs={s.name: s for s in output_specs(version_config)},
                runner=runner,
                stats=stats,
                instances=instances,
                labels=labels,
            )
    except BaseException:
        for loaded in versions.values():
            await loaded.runner.stop()
        raise
    return versions


def load_backend(version_dir: Path, config: ModelConfig, device: Device) -> Backend:
    """Load one backend instance and complete ``config`` in place from what the model file
    declares, checking what the config says against it (idempotent across instances)."""
    platform = platform_of(config, version_dir)
    backend = backend_class(platform)()
    backend.load(version_dir, config, device)
    found_in, found_out = backend.inputs, backend.outputs
    if config.max_batch_size > 0 and backend.max_batch_size == 0:
        found_in, found_out = _strip_batch(found_in), _strip_batch(found_out)
    try:
        complete_config(config, found_in, found_out, backend.max_batch_size)
    except BaseException:
        backend.unload()
        raise
    if not config.platform and not config.backend:
        config.platform = platform
    return backend


def _strip_batch(specs: list[TensorSpec]) -> list[TensorSpec]:
    return [TensorSpec(s.name, s.datatype, s.dims[1:]) for s in specs]


async def _load_triton_python(
    model_dir: Path, config: ModelConfig, default_device: str, repository: ModelRepository
) -> dict[str, ModelVersion]:
    from accelserve.backends.triton_python.load import load_triton_python

    # execute() takes whole requests (not a merged batch) and may answer with a stream.
    devices = instance_devices(config, default_device)
    return await load_triton_python(model_dir, config, devices, lambda: repository.caller)


# Platforms whose versions are not backend instances; every other platform (the backends'
# own, found through ``accelserve.backends``) loads through ``_load_backend_versions``.
PLATFORMS: dict[str, VersionLoader] = {
    "ensemble": _load_ensemble,
    "triton_python": _load_triton_python,  # backend "python" with class TritonPythonModel
}
