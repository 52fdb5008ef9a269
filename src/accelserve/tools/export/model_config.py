"""The ``config.pbtxt`` an export writes: from the exporter's specs, or read from the model file
through the backend that will serve it (``repository.load_backend`` completes a config exactly
as the server does), kept beside what an existing config of the same model says."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format

from accelserve.config import input_specs, is_ensemble, output_specs, parse_config
from accelserve.devices import resolve_device
from accelserve.errors import InvalidArgumentError
from accelserve.protocol.model_config_pb2 import DataType, ModelConfig
from accelserve.repository import load_backend
from accelserve.types import V2_TO_CONFIG, TensorSpec

# What an export decides; every other field of an existing config (instance groups,
# parameters, version policy...) is the user's and stays.
_EXPORT_FIELDS = ("platform", "backend", "input", "output", "max_batch_size")


def base_config(model_dir: Path) -> ModelConfig:
    """The model's existing config without the fields an export decides (empty if none)."""
    path = model_dir / "config.pbtxt"
    config = (
        parse_config(path.read_text(), f"{model_dir.name}/config.pbtxt")
        if path.is_file()
        else ModelConfig()
    )
    if is_ensemble(config):
        raise InvalidArgumentError(
            f"target: model '{model_dir.name}' is an ensemble; expected a model name that is "
            "free or holds a model of files"
        )
    for name in _EXPORT_FIELDS:
        config.ClearField(name)
    config.ClearField("default_model_filename")
    config.name = model_dir.name
    return config


def build_config(
    base: ModelConfig,
    platform: str,
    max_batch_size: int,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
) -> ModelConfig:
    config = ModelConfig()
    config.CopyFrom(base)
    config.platform = platform
    config.max_batch_size = max_batch_size
    if max_batch_size > 0:
        config.dynamic_batching.SetInParent()
    else:
        config.ClearField("dynamic_batching")
    for specs, tensors in ((inputs, config.input), (outputs, config.output)):
        for spec in specs:
            entry = tensors.add(name=spec.name, dims=list(spec.dims))
            entry.data_type = DataType.Value(V2_TO_CONFIG[spec.datatype])
    return config


def config_from_file(
    version_dir: Path, base: ModelConfig, platform: str, max_batch_size: int | None
) -> ModelConfig:
    """The complete config of the model file in ``version_dir``, as its backend reads it.

    ``max_batch_size`` None lets the file decide (a dynamic first dimension on every tensor
    batches, as Triton completes it); 0 keeps the whole shapes; N > 0 batches up to N."""
    probe = ModelConfig(name=base.name, platform=platform)
    if max_batch_size:
        probe.max_batch_size = max_batch_size
    backend = load_backend(version_dir, probe, resolve_device("cpu"))
    backend.unload()
    inputs, outputs = input_specs(probe), output_specs(probe)
    limit = probe.max_batch_size
    if max_batch_size == 0 and limit > 0:  # the file batches, the user wants whole shapes
        inputs = [TensorSpec(s.name, s.datatype, (-1, *s.dims)) for s in inputs]
        outputs = [TensorSpec(s.name, s.datatype, (-1, *s.dims)) for s in outputs]
        limit = 0
    return build_config(base, platform, limit, inputs, outputs)


def render(config: ModelConfig) -> str:
    return str(text_format.MessageToString(config))
