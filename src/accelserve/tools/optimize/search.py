"""Keep the sensitive layers precise: when a whole-model quantization fails the tolerance,
find the node groups that lose the most accuracy and leave them in FP32.

1. The candidate's quantizable nodes are grouped by their name's path (``/encoder/layer.0/
   attention/self/...``), coarsened until there are at most ``max_groups`` groups (nodes
   without a path are chunked in graph order).
2. Sensitivity: each group alone is quantized (everything else FP32) and its accuracy measured
   on the held-out data.
3. The most sensitive 1, 2, 4, ... groups are kept in FP32, the rest quantized, until the model
   passes; a bisection between the last failing and the first passing count then keeps as few
   groups precise as it can.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from accelserve.tools.optimize.accuracy import Accuracy
from accelserve.tools.optimize.candidates import (
    Built,
    Samples,
    Spec,
    base_of,
    build,
    quantizable_nodes,
)

DEFAULT_MAX_GROUPS = 24


def group_nodes(nodes: Sequence[str], max_groups: int = DEFAULT_MAX_GROUPS) -> list[list[str]]:
    """Nodes grouped by the longest name-path prefix that gives at most ``max_groups`` groups."""
    if max_groups < 1:
        raise ValueError(f"max_groups: expected >= 1; received {max_groups}")
    if len(nodes) <= max_groups:
        return [[n] for n in nodes]
    depth = max(len(n.split("/")) for n in nodes)
    for keep in range(depth - 1, 0, -1):
        groups: dict[str, list[str]] = {}
        for n in nodes:
            groups.setdefault("/".join(n.split("/")[:keep]), []).append(n)
        if 1 < len(groups) <= max_groups:
            return list(groups.values())
    size = -(-len(nodes) // max_groups)  # no usable path: consecutive chunks
    return [list(nodes[i : i + size]) for i in range(0, len(nodes), size)]


@dataclass
class SearchResult:
    built: Built
    accuracy: Accuracy
    kept_groups: int
    groups: int
    steps: int  # models built and checked


def keep_sensitive(
    spec: Spec,
    source: Path,
    workdir: Path,
    calibration: Samples,
    judge: Callable[[Path], Accuracy],
    tolerances: Mapping[str, float],
    note: Callable[[str], None],
    max_groups: int = DEFAULT_MAX_GROUPS,
) -> SearchResult | None:
    """The passing model with the fewest precise groups; None when even keeping all but one
    group precise fails (or the candidate quantizes nothing)."""
    nodes = quantizable_nodes(base_of(spec, source, workdir, calibration), spec.quantizes)
    groups = group_nodes(nodes, max_groups)
    if len(groups) < 2:
        return None
    scratch = workdir / f"{spec.name}-search"
    steps = 0
    sensitivity: list[tuple[float, int]] = []
    for k, group in enumerate(groups):
        others = [n for g in groups if g is not group for n in g]
        trial = build(spec, source, scratch / f"only{k}", calibration, others)
        steps += 1
        margin = judge(trial.path).worst_margin(tolerances)
        sensitivity.append((margin, k))
        trial.path.unlink(missing_ok=True)
    order = [k for _, k in sorted(sensitivity, reverse=True)]
    note(
        f"{spec.name}: {len(groups)} groups; most sensitive: "
        + ", ".join(
            f"{_label(groups[k])} ({m:.2g})" for m, k in sorted(sensitivity, reverse=True)[:3]
        )
    )

    def attempt(count: int) -> tuple[Built, Accuracy]:
        exclude = [n for k in order[:count] for n in groups[k]]
        built = build(spec, source, workdir, calibration, exclude)
        return built, judge(built.path)

    best: tuple[Built, Accuracy, int] | None = None
    low, count = 0, 1  # low: kept counts known to fail
    while count < len(groups):
        built, accuracy = attempt(count)
        steps += 1
        if not accuracy.failures(tolerances):
            best = (built, accuracy, count)
            break
        note(f"{spec.name}: {count} group(s) kept precise: {accuracy.failures(tolerances)[0]}")
        low, count = (
            count,
            min(count * 2, len(groups) - 1) if count < len(groups) - 1 else len(groups),
        )
    if best is None:
        return None
    high = best[2]
    while high - low > 1:  # the fewest precise groups that still pass
        mid = (low + high) // 2
        built, accuracy = attempt(mid)
        steps += 1
        if accuracy.failures(tolerances):
            low = mid
        else:
            best, high = (built, accuracy, mid), mid
    return SearchResult(best[0], best[1], best[2], len(groups), steps)


def _label(group: Sequence[str]) -> str:
    if len(group) == 1:
        return group[0]
    prefix = "/".join(group[0].split("/")[:-1])
    return f"{prefix}/* ({len(group)} nodes)"
