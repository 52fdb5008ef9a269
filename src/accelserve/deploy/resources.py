"""What one replica of a group of models asks Ray for, read from the models' configs alone.

A replica runs an accelserve data plane over its group, so it needs what the group's instances
need together:

- ``num_cpus``: one per CPU instance (each runs its batches on its own thread), at least 1 for
  the replica's event loop;
- ``num_gpus``: inside a replica Ray sets ``CUDA_VISIBLE_DEVICES``, so the GPUs it is given
  renumber from ``cuda:0`` and every model of the group shares them: the replica asks for the
  most GPUs any one model spreads over (``instance_group.gpus``, one when empty). A model may ask
  for a fraction of a GPU with the config parameter ``ray_num_gpus`` (e.g. ``"0.5"``); the
  fractions of a group add up, capped at one GPU;
- ``resources={"TPU": n}`` for models on TPUs (the default device ``tpu[:N]``, since Triton's
  config has no TPU kind), ``n`` the number of TPU chips its instances use.

``max_ongoing_requests`` (Ray Serve's default of 5 would cap every batch at 5) lets each
instance hold a full batch running and a full batch forming; the autoscaling target is one full
batch per instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from accelserve.config import instance_count, is_ensemble
from accelserve.errors import ConfigError
from accelserve.protocol.model_config_pb2 import ModelConfig, ModelInstanceGroup

GPU_FRACTION_PARAMETER = "ray_num_gpus"
BATCHES_IN_FLIGHT = 2  # per instance: one running, one forming behind it


@dataclass(frozen=True)
class ReplicaResources:
    num_cpus: float
    num_gpus: float
    resources: dict[str, float] = field(default_factory=dict)
    max_ongoing_requests: int = 5
    target_ongoing_requests: int = 2

    def ray_actor_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            options["num_gpus"] = self.num_gpus
        if self.resources:
            options["resources"] = dict(self.resources)
        return options


@dataclass(frozen=True)
class _ModelNeeds:
    cpu_instances: int
    gpus: int  # whole GPUs the model spreads over
    gpu_fraction: float  # from ray_num_gpus, 0 when unset
    tpus: int
    batch_slots: int  # requests one full batch on every instance holds


def replica_resources(
    configs: Sequence[ModelConfig], default_device: str = "cpu"
) -> ReplicaResources:
    """The Ray resources and request limits of one replica serving ``configs`` (a group),
    ``default_device`` being where models without ``instance_group`` run (``auto`` counts as
    CPU: a cluster's nodes may differ from this one, so ask for GPUs explicitly)."""
    needs = [_model_needs(c, default_device) for c in configs if not is_ensemble(c)]
    cpus = sum(n.cpu_instances for n in needs)
    whole_gpus = max((n.gpus for n in needs), default=0)
    fraction = min(1.0, sum(n.gpu_fraction for n in needs))
    tpus = max((n.tpus for n in needs), default=0)
    slots = max(1, sum(n.batch_slots for n in needs))
    return ReplicaResources(
        num_cpus=float(max(1, cpus)),
        num_gpus=float(max(whole_gpus, fraction)),
        resources={"TPU": float(tpus)} if tpus else {},
        max_ongoing_requests=max(5, BATCHES_IN_FLIGHT * slots),
        target_ongoing_requests=slots,
    )


def _model_needs(config: ModelConfig, default_device: str) -> _ModelNeeds:
    batch = max(1, config.max_batch_size)
    fraction = _gpu_fraction(config)
    default_kind, default_count = _device_kind(default_device, config)
    if not config.instance_group:
        groups = [(default_kind, 1, default_count)]
    else:
        groups = []
        for position, group in enumerate(config.instance_group):
            count = instance_count(config, position)
            kind = group.kind
            if kind == ModelInstanceGroup.KIND_GPU:
                groups.append(("cuda", count, max(1, len(set(group.gpus)))))
            elif kind == ModelInstanceGroup.KIND_CPU:
                groups.append(("cpu", count, 0))
            else:  # KIND_AUTO and KIND_MODEL: where the default device says
                groups.append((default_kind, count, default_count))
    cpu = sum(count for kind, count, _ in groups if kind == "cpu")
    gpus = max((chips for kind, _, chips in groups if kind == "cuda"), default=0)
    tpus = max((chips for kind, _, chips in groups if kind == "tpu"), default=0)
    instances = sum(count * max(1, chips) for _, count, chips in groups)
    if fraction and gpus:
        gpus = 0  # the model asked for a share of one GPU, not the whole of it
    return _ModelNeeds(cpu, gpus, fraction, tpus, batch * instances)


def _device_kind(device: str, config: ModelConfig) -> tuple[str, int]:
    """(kind, chips) of a default device string: cpu/auto -> ("cpu", 0); cuda[:N] or
    /device:GPU:N -> ("cuda", 1); tpu[:N] -> ("tpu", 1)."""
    text = device.strip().lower()
    if text in ("", "auto") or text.startswith(("cpu", "/device:cpu")):
        return "cpu", 0
    if text.startswith(("cuda", "gpu", "/device:gpu")):
        return "cuda", 1
    if text.startswith("tpu"):
        return "tpu", 1
    raise ConfigError(
        f"model '{config.name}' default device: expected cpu, cuda[:N], /device:GPU:N or "
        f"tpu[:N]; received {device!r}"
    )


def _gpu_fraction(config: ModelConfig) -> float:
    parameter = config.parameters.get(GPU_FRACTION_PARAMETER)
    if parameter is None:
        return 0.0
    text = parameter.string_value
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise ConfigError(
            f"model '{config.name}' parameter {GPU_FRACTION_PARAMETER}: expected a number in "
            f"(0, 1]; received {text!r}"
        )
    return value
