"""Write the chosen candidate as a new version of the model and choose which version is served.

The new version is ``max(existing) + 1`` with the candidate's model file and ``optimize.json``
(what it is, its accuracy and speed). Since a repository serves its latest version by default,
``config.pbtxt`` gets a version policy that pins the served version: the original without
``--apply``, the new one with it (``version_policy: { specific: { versions: [N] } }``). The
original version stays on disk; ``accelserve optimize REPO/MODEL --serve-version N`` switches back.
The previous config is kept as ``config.pbtxt.bak``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from accelserve.errors import ConfigError

_POLICY = re.compile(r"^\s*version_policy\b")


def versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def served_versions(model_dir: Path) -> list[int]:
    from accelserve.config import read_config, select_versions

    return [int(v) for v in select_versions(model_dir, read_config(model_dir))]


def write_version(
    model_dir: Path, model_file: Path, filename: str, record: dict[str, Any], overlay: str = ""
) -> int:
    """Copy ``model_file`` into a new version folder, with ``overlay`` (the config the candidate
    needs, e.g. its parameters) as its ``config_overlay.pbtxt``; returns its number."""
    from accelserve.config import VERSION_OVERLAY

    number = (versions(model_dir) or [0])[-1] + 1
    folder = model_dir / str(number)
    folder.mkdir()
    if model_file.is_dir():  # a SavedModel
        shutil.copytree(model_file, folder / filename)
    else:
        shutil.copyfile(model_file, folder / filename)
    if overlay.strip():
        (folder / VERSION_OVERLAY).write_text(overlay.strip() + "\n")
    (folder / "optimize.json").write_text(json.dumps(record, indent=2) + "\n")
    return number


def serve_version(model_dir: Path, number: int) -> Path:
    """Pin the served version in ``config.pbtxt`` (a missing file is created)."""
    from google.protobuf import text_format

    from accelserve.config import parse_config

    present = versions(model_dir)
    if number not in present:
        raise ConfigError(
            f"--serve-version: expected one of the model's versions {present}; received {number}"
        )
    path = model_dir / "config.pbtxt"
    text = path.read_text() if path.is_file() else ""
    line = f"version_policy: {{ specific: {{ versions: [ {number} ] }} }}\n"
    if text:
        shutil.copyfile(path, model_dir / "config.pbtxt.bak")
    if not any(_POLICY.match(t) for t in text.splitlines()):
        new = text + ("" if not text or text.endswith("\n") else "\n") + line
    else:  # rewrite through protobuf (its comments are lost; the .bak keeps them)
        config = parse_config(text, str(path))
        config.version_policy.specific.versions[:] = [number]
        new = text_format.MessageToString(config)
    path.write_text(new)
    return path
