"""The example models served optimized by default, when their recorded recipe stays accurate.

``accelserve optimize`` searches for minutes; ``make serve`` must start quickly. So the search's
result is recorded: a model directory of the example repository may hold ``optimize_recipe.json``
(the chosen candidate's exact settings: its kind, the nodes kept FP32, the texts to calibrate
and to validate on, the tolerance). ``accelserve prepare-examples`` runs that recipe once,
without a search: it builds the candidate from version 1, runs the held-out texts through the
ensemble containing the model with version 1 and with the candidate, and writes the candidate as
version 2 only when it passes the tolerance (the repository serves the latest version, so it is
then served; otherwise version 1 stays, and the reason is printed). The verdict is cached in
``.optimize-verdict.json`` under the recipe's and the source file's fingerprint, so later runs
skip it; ``--force`` rebuilds, ``--no-optimize`` skips the step.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from accelserve.errors import ConfigError

RECIPE = "optimize_recipe.json"
VERDICT = ".optimize-verdict.json"
DEFAULT_TOLERANCE: tuple[str, ...] = ()  # accelserve optimize's defaults


@dataclass
class Outcome:
    model: str
    version: int | None  # the optimized version written (and served), None: the original stays
    message: str
    cached: bool = False


def _recipe(model_dir: Path) -> dict[str, Any]:
    from accelserve.tools.optimize.candidates import ONNX_SPECS

    path = model_dir / RECIPE
    try:
        recipe = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: expected a JSON object; cannot read it: {exc}") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"{path}: expected a JSON object; received {type(recipe).__name__}")
    kind = recipe.get("candidate")
    if kind not in ONNX_SPECS:
        raise ConfigError(
            f"{path}: 'candidate' expected one of {', '.join(ONNX_SPECS)}; received {kind!r}"
        )
    for key in ("calibration_text", "held_out_text"):
        if not isinstance(recipe.get(key), str) or not (model_dir / recipe[key]).is_file():
            raise ConfigError(
                f"{path}: {key!r} expected a text file beside the recipe; received "
                f"{recipe.get(key)!r}"
            )
    kept = recipe.setdefault("nodes_kept_fp32", [])
    if not isinstance(kept, list) or not all(isinstance(n, str) for n in kept):
        raise ConfigError(f"{path}: 'nodes_kept_fp32' expected a list of node names")
    return recipe


def _fingerprint(model_dir: Path, source: Path) -> str:
    digest = hashlib.sha256((model_dir / RECIPE).read_bytes())
    for key in ("calibration_text", "held_out_text"):
        digest.update((model_dir / json.loads((model_dir / RECIPE).read_text())[key]).read_bytes())
    stat = source.stat()
    digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def prepare_optimized(model_dir: Path, force: bool = False) -> Outcome | None:
    """Run ``model_dir``'s recipe (see the module docstring); None when it has none."""
    if not (model_dir / RECIPE).is_file():
        return None
    recipe = _recipe(model_dir)
    source = model_dir / str(recipe.get("from_version", 1)) / "model.onnx"
    if not source.is_file():
        raise ConfigError(f"{model_dir / RECIPE}: the source model {source} does not exist")
    fingerprint = _fingerprint(model_dir, source)
    verdict_path = model_dir / VERDICT
    if verdict_path.is_file() and not force:
        verdict = json.loads(verdict_path.read_text())
        version = verdict.get("version")
        if verdict.get("recipe") == fingerprint and (
            version is None or (model_dir / str(version)).is_dir()
        ):
            return Outcome(model_dir.name, version, verdict["message"], cached=True)
    for folder in model_dir.iterdir():  # a rerun replaces what an earlier recipe run wrote
        record = folder / "optimize.json"
        if (
            folder.name.isdigit()
            and record.is_file()
            and "recipe" in json.loads(record.read_text())
        ):
            shutil.rmtree(folder)
    outcome = _run(model_dir, recipe, source, fingerprint)
    verdict_path.write_text(
        json.dumps({"recipe": fingerprint, "version": outcome.version, "message": outcome.message})
        + "\n"
    )
    return outcome


def _run(model_dir: Path, recipe: dict[str, Any], source: Path, fingerprint: str) -> Outcome:
    from accelserve.tools.optimize.accuracy import evaluate, parse_tolerances
    from accelserve.tools.optimize.apply import write_version
    from accelserve.tools.optimize.candidates import ONNX_SPECS, Runner, build
    from accelserve.tools.optimize.data import Pipeline, text_samples

    kind = recipe["candidate"]
    bounds = parse_tolerances(recipe.get("tolerance", DEFAULT_TOLERANCE))
    pipeline = Pipeline(model_dir.parent, model_dir.name)
    try:
        limit = int(recipe.get("max_samples", 200))
        calibration = text_samples(model_dir / recipe["calibration_text"], pipeline, limit)
        held_out = text_samples(model_dir / recipe["held_out_text"], pipeline, limit)
        with tempfile.TemporaryDirectory(prefix="accelserve-examples-") as tmp:
            built = build(
                ONNX_SPECS[kind],
                source,
                Path(tmp),
                [s.inputs for s in calibration],
                recipe["nodes_kept_fp32"],
            )
            original, candidate = Runner(source), Runner(built.path)
            reference = [pipeline.finish(s, original(s.inputs)) for s in held_out]
            accuracy = evaluate(
                lambda k: pipeline.finish(held_out[k], candidate(held_out[k].inputs)), reference
            )
            failures = accuracy.failures(bounds)
            where = (
                f"on {len(held_out)} held-out texts through ensemble {pipeline.name!r} "
                f"against version {source.parent.name}"
            )
            if failures:
                return Outcome(
                    model_dir.name,
                    None,
                    f"{model_dir.name}: version {source.parent.name} (FP32) stays served: "
                    f"{built.label} failed the tolerance {where}: {'; '.join(failures)}",
                )
            record = {
                "candidate": built.label,
                "description": ONNX_SPECS[kind].description,
                "from_version": int(source.parent.name),
                "nodes_kept_fp32": built.excluded,
                "accuracy": f"{accuracy.summary()} {where}",
                "recipe": fingerprint,
            }
            version = write_version(model_dir, built.path, source.name, record)
    finally:
        pipeline.close()
    return Outcome(
        model_dir.name,
        version,
        f"{model_dir.name}: serving version {version} ({built.label}): {accuracy.summary()} "
        f"{where}",
    )


def optimize_examples(repository: Path, force: bool, stream: TextIO) -> list[Outcome]:
    """Every recipe of ``repository``'s models; each outcome is printed to ``stream``."""
    outcomes = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir()):
        if not (model_dir / RECIPE).is_file():
            continue
        print(f"{model_dir.name}: checking the recorded optimization recipe ...", file=stream)
        outcome = prepare_optimized(model_dir, force)
        if outcome is not None:
            outcomes.append(outcome)
            print(outcome.message + (" (cached)" if outcome.cached else ""), file=stream)
    return outcomes
