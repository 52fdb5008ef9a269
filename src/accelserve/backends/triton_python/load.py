"""Loading a Triton-style Python model: per version, start one worker per instance, let the
first auto-complete the config (``auto_complete_config``), then ``initialize`` each with
Triton's ``args`` dict."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from accelserve.backends.python import DEFAULT_INITIALIZE_TIMEOUT_S
from accelserve.backends.triton_python.process import WorkerFailure, WorkerProcess
from accelserve.backends.triton_python.runner import TritonPythonRunner
from accelserve.config import (
    config_to_json,
    input_specs,
    output_specs,
    seconds_parameter,
    select_versions,
)
from accelserve.devices import Device
from accelserve.errors import ConfigError
from accelserve.model import ModelCaller, ModelVersion
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.stats import ModelStats

_COMPLETED = ("input", "output", "max_batch_size", "dynamic_batching", "model_transaction_policy")


async def load_triton_python(
    model_dir: Path,
    config: ModelConfig,
    devices: list[Device],
    caller: Callable[[], ModelCaller | None],
) -> dict[str, ModelVersion]:
    versions: dict[str, ModelVersion] = {}
    try:
        for version in select_versions(model_dir, config):
            versions[version] = await _load_version(model_dir, version, config, devices, caller)
    except BaseException:
        for loaded in versions.values():
            await loaded.runner.stop()
        raise
    return versions


async def _load_version(
    model_dir: Path,
    version: str,
    base: ModelConfig,
    devices: list[Device],
    caller: Callable[[], ModelCaller | None],
) -> ModelVersion:
    config = ModelConfig()
    config.CopyFrom(base)
    where = f"model '{config.name}' version {version}"
    path = model_dir / version / (config.default_model_filename or "model.py")
    if not path.is_file():
        raise ConfigError(f"{where}: expected file '{path.name}' is missing")
    key = "initialize_timeout_s"
    text = config.parameters[key].string_value if key in config.parameters else None
    timeout = seconds_parameter(where, key, text, DEFAULT_INITIALIZE_TIMEOUT_S)

    def spawn(index: int) -> WorkerProcess:
        worker = WorkerProcess()
        try:
            completed = worker.handshake(
                "init",
                {"path": str(path.resolve()), "config": config_to_json(config)},
                "config",
                timeout,
            )
            if index == 0:
                _apply(config, completed)
            device = devices[index]
            args = {
                "model_config": json.dumps(config_to_json(config)),
                "model_instance_kind": "GPU" if device.kind == "cuda" else "CPU",
                "model_instance_name": f"{config.name}_{index}",
                "model_instance_device_id": str(device.index),
                "model_repository": str(model_dir.resolve()),
                "model_version": version,
                "model_name": config.name,
            }
            worker.handshake("initialize", args, "ready", timeout)
        except BaseException:
            worker.kill()
            raise
        return worker

    workers: list[WorkerProcess] = []
    try:
        for index in range(len(devices)):
            workers.append(await asyncio.to_thread(spawn, index))
        if not config.output:
            raise ConfigError(
                f"{where}: the config declares no outputs and auto_complete_config() added none"
            )
    except WorkerFailure as exc:
        for worker in workers:
            worker.kill()
        raise ConfigError(f"{where}: model.py failed to start: {exc}") from None
    except BaseException:
        for worker in workers:
            worker.kill()
        raise
    stats = ModelStats(config.name, version)
    runner = TritonPythonRunner(config, version, workers, spawn, stats, caller)
    return ModelVersion(
        name=config.name,
        version=version,
        config=config,
        inputs={s.name: s for s in input_specs(config)},
        outputs={s.name: s for s in output_specs(config)},
        runner=runner,
        stats=stats,
        placements=[
            {"instance": f"{config.name}_{i}", "device": str(d), "memory_bytes": None}
            for i, d in enumerate(devices)
        ],
    )


def _apply(config: ModelConfig, completed: dict[str, Any]) -> None:
    """What ``auto_complete_config`` added to the config (config.pbtxt's own entries win)."""
    filled = ModelConfig()
    json_format.ParseDict(
        {k: completed[k] for k in _COMPLETED if k in completed}, filled, ignore_unknown_fields=True
    )
    have = {i.name for i in config.input}
    config.input.extend(i for i in filled.input if i.name not in have)
    have = {o.name for o in config.output}
    config.output.extend(o for o in filled.output if o.name not in have)
    if not config.max_batch_size:
        config.max_batch_size = filled.max_batch_size
    if filled.HasField("dynamic_batching") and config.WhichOneof("scheduling_choice") is None:
        config.dynamic_batching.MergeFrom(filled.dynamic_batching)
    if filled.HasField("model_transaction_policy"):
        config.model_transaction_policy.MergeFrom(filled.model_transaction_policy)
