"""Which models share a replica: groups from ``--group NAME=model,model``, read from the
repository's configs alone (nothing is loaded).

Every model the groups do not name goes to the group ``default`` (with no ``--group`` at all,
that is the whole repository). An ensemble runs its steps in its own process, so its steps
(and theirs, for nested ensembles) join the ensemble's group; a step that another group names
is an error, since one model would then be served by two groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from accelserve.config import is_ensemble, read_config
from accelserve.errors import AccelServeError, ConfigError
from accelserve.protocol.model_config_pb2 import ModelConfig
from accelserve.repository import ModelRepository

DEFAULT_GROUP = "default"
# A group names a Ray Serve deployment: keep it to characters safe in URLs and YAML.
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def deployment_name(group: str) -> str:
    """The Ray Serve deployment that serves a group."""
    return f"accelserve-{group}"


@dataclass(frozen=True)
class ModelGroup:
    name: str
    models: tuple[str, ...]
    configs: tuple[ModelConfig, ...]  # of the models whose config reads; for resources


def parse_group_specs(specs: Iterable[str]) -> dict[str, list[str]]:
    """``["a=m1,m2", "b=m3"]`` -> ``{"a": ["m1", "m2"], "b": ["m3"]}``."""
    groups: dict[str, list[str]] = {}
    for spec in specs:
        name, sep, models = spec.partition("=")
        name = name.strip()
        if not sep or not _GROUP_NAME.fullmatch(name):
            raise ConfigError(
                f"--group: expected NAME=model[,model...] with NAME of letters, digits, '_', "
                f"'.', '-' (at most 63); received {spec!r}"
            )
        if name in groups:
            raise ConfigError(f"--group: expected each group once; received '{name}' twice")
        listed = [m.strip() for m in models.split(",") if m.strip()]
        if not listed:
            raise ConfigError(f"--group {name}: expected at least one model; received none")
        groups[name] = listed
    return groups


def plan_groups(root: str | Path, specs: dict[str, list[str]] | None = None) -> list[ModelGroup]:
    """The groups of the repository at ``root`` (see the module's docstring)."""
    repository = ModelRepository(root)
    names = repository.scan()
    configs = _read_configs(repository.root, names)
    owner: dict[str, str] = {}
    for group, models in (specs or {}).items():
        for model in models:
            if model not in names:
                raise ConfigError(
                    f"--group {group}: expected models of the repository ({', '.join(names)}); "
                    f"received '{model}'"
                )
            if model in owner:
                raise ConfigError(
                    f"--group: expected each model in one group; '{model}' is in "
                    f"'{owner[model]}' and '{group}'"
                )
            owner[model] = group
    ensembles = [n for n in names if n in configs and is_ensemble(configs[n])]
    # Ensembles pull their steps into their own group: named ones first, then the others,
    # which join the group of a step that has one.
    for name in sorted(ensembles, key=lambda n: n not in owner):
        steps = _steps(name, configs, names)
        if name not in owner:
            owner[name] = next((owner[s] for s in steps if s in owner), DEFAULT_GROUP)
        group = owner[name]
        for step in steps:
            if owner.setdefault(step, group) != group:
                raise ConfigError(
                    f"--group: ensemble '{name}' (group '{group}') runs '{step}', which is "
                    f"in group '{owner[step]}'; an ensemble's steps must share its group"
                )
    for name in names:
        owner.setdefault(name, DEFAULT_GROUP)
    order = [*list(specs or {}), DEFAULT_GROUP]
    groups = []
    for group in dict.fromkeys(order):
        members = tuple(n for n in names if owner[n] == group)
        if members:
            found = tuple(configs[n] for n in members if n in configs)
            groups.append(ModelGroup(group, members, found))
    return groups


def _read_configs(root: Path, names: list[str]) -> dict[str, ModelConfig]:
    """Configs that read; a broken one is left to the replica, which reports the model
    UNAVAILABLE with the reason, as a single server does."""
    configs = {}
    for name in names:
        try:
            configs[name] = read_config(root / name)
        except AccelServeError:
            continue
    return configs


def _steps(name: str, configs: dict[str, ModelConfig], names: list[str]) -> list[str]:
    """Every model the ensemble ``name`` runs, nested ensembles' steps included."""
    found: list[str] = []
    pending = [name]
    while pending:
        config = configs.get(pending.pop())
        if config is None:
            continue
        for step in config.ensemble_scheduling.step:
            model = step.model_name
            if model in names and model not in found and model != name:
                found.append(model)
                pending.append(model)
    return found
