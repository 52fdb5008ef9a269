"""Speed of a model file served as the model is configured, through the real scheduler.

Each file is put as version 1 of the model in a scratch repository, with the model's own
``config.pbtxt`` (its batching, instance groups and parameters; the version policy dropped),
and measured with the advisor's in-process measurement (``advisor.advise.measure``): the
repository loads it, the dynamic batcher forms batches of the configured size over the
configured instances, and closed-loop clients send the held-out samples.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from accelserve.tools.advisor.candidates import Candidate, Measurement

DEFAULT_BATCH = 8  # when the config names no preferred batch size


def configured(config: Any, device: Any, batch_size: int = 0, instances: int = 0) -> Candidate:
    """The model's configured batch size (largest preferred, else min(8, max_batch_size)) and
    instance count (the groups' counts summed), each overridable."""
    mbs = config.max_batch_size
    preferred = list(config.dynamic_batching.preferred_batch_size)
    if mbs <= 0:
        batch = 1
    elif batch_size:
        if not 1 <= batch_size <= mbs:
            raise ValueError(
                f"--batch-size: expected 1..{mbs} (max_batch_size); received {batch_size}"
            )
        batch = batch_size
    else:
        batch = max(preferred) if preferred else min(DEFAULT_BATCH, mbs)
    count = instances or sum(g.count or 1 for g in config.instance_group) or 1
    return Candidate(device, batch, count, 1 if mbs > 0 else 0)


def scratch_model(model_dir: Path, model_file: Path, root: Path, overlay: str = "") -> Path:
    """``root/NAME/1/<file name>`` -> ``model_file`` with the model's config (no version policy)
    and the candidate's ``overlay`` (a partial config: its parameters, accelerators) merged in."""
    from google.protobuf import text_format

    from accelserve.config import merge_overlay, parse_config, read_config

    config = read_config(model_dir)
    config.ClearField("version_policy")
    merge_overlay(config, parse_config(overlay, "candidate overlay"), "candidate overlay")
    folder = root / model_dir.name
    (folder / "1").mkdir(parents=True)
    filename = config.default_model_filename or model_file.name
    (folder / "1" / filename).symlink_to(model_file.resolve())
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config))
    return folder


def speed(
    model_dir: Path,
    model_file: Path,
    setting: Candidate,
    tensors: Sequence[Mapping[str, np.ndarray]],
    duration_s: float,
    warmup_s: float,
    progress: Any,
    overlay: str = "",
) -> Measurement:
    from accelserve.errors import AccelServeError
    from accelserve.tools.advisor.advise import inspect_model, measure

    with tempfile.TemporaryDirectory(prefix="accelserve-optimize-") as root:
        folder = scratch_model(model_dir, model_file, Path(root), overlay)
        try:
            target = inspect_model(folder, setting.device)
        except AccelServeError as exc:
            return Measurement(setting, error=exc.message[:300])
        return asyncio.run(measure(target, setting, tensors, duration_s, warmup_s, progress))


def request_rows(
    samples: Sequence[Mapping[str, np.ndarray]], batches: bool, limit: int = 32
) -> list[dict[str, np.ndarray]]:
    """One-row requests from the held-out samples (the first row of each), at most ``limit``."""
    out = []
    for sample in samples[:limit]:
        out.append({k: v[:1] for k, v in sample.items()} if batches else dict(sample))
    return out
