"""Accuracy of a candidate against the original on held-out data, per output.

For every floating-point output: the largest absolute error, the largest error relative to the
reference's largest magnitude, and for embedding-like outputs (last dimension of 2 or more) the
cosine similarity of each row (the last dimension) to the reference's, as mean and minimum.
Integer and text outputs must match exactly.

Tolerances (``--tolerance NAME=VALUE``): ``cosine`` (mean, default 0.995) and ``cosine_min``
(default 0.99) for embedding-like outputs; ``max_rel`` (default 0.01 for outputs that are not
embedding-like) and ``max_abs`` (no default) for every floating-point output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_TOLERANCES: dict[str, float] = {"cosine": 0.995, "cosine_min": 0.99, "max_rel": 0.01}
TOLERANCE_NAMES = ("cosine", "cosine_min", "max_abs", "max_rel")
HIGHER_IS_BETTER = frozenset({"cosine", "cosine_min"})


def parse_tolerances(items: Sequence[str]) -> dict[str, float]:
    """``["cosine=0.99", ...]`` over the defaults; a user's ``max_rel`` covers every output."""
    out = dict(DEFAULT_TOLERANCES)
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in TOLERANCE_NAMES:
            raise ValueError(
                f"--tolerance: expected NAME=VALUE with NAME among {', '.join(TOLERANCE_NAMES)}; "
                f"received {item!r}"
            )
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"--tolerance {name}: expected a number; received {value!r}") from None
        low, high = (-1.0, 1.0) if name in HIGHER_IS_BETTER else (0.0, math.inf)
        if not low <= number <= high or math.isnan(number):
            raise ValueError(
                f"--tolerance {name}: expected a value in [{low:g}, {high:g}]; received {number:g}"
            )
        out[name] = number
        if name == "max_rel":
            out["max_rel_all"] = 1.0  # the user's bound applies to embedding-like outputs too
    return out


def tightened(tolerances: Mapping[str, float], reserve: float) -> dict[str, float]:
    """Bounds that keep ``reserve`` (0..1) of each bound's slack unused: a cosine bound b
    becomes 1 - (1 - b)(1 - reserve), an error bound b becomes b(1 - reserve). The search aims
    at these, so that what passes on the held-out samples still passes on texts it never saw."""
    if not 0 <= reserve < 1:
        raise ValueError(f"--search-reserve: expected a value in [0, 1); received {reserve:g}")
    out = dict(tolerances)
    for name, bound in tolerances.items():
        if name in HIGHER_IS_BETTER:
            out[name] = 1.0 - (1.0 - bound) * (1.0 - reserve)
        elif name in TOLERANCE_NAMES:
            out[name] = bound * (1.0 - reserve)
    return out


@dataclass
class OutputError:
    name: str
    exact: bool = False  # integer/text output: only equality counts
    mismatched: int = 0  # exact outputs: elements that differ
    max_abs: float = 0.0
    max_rel: float = 0.0
    cosine: float = math.nan  # mean over rows; NaN when not embedding-like
    cosine_min: float = math.nan

    @property
    def embedding_like(self) -> bool:
        return not math.isnan(self.cosine)


@dataclass
class Accuracy:
    outputs: list[OutputError] = field(default_factory=list)

    def failures(self, tolerances: Mapping[str, float]) -> list[str]:
        """Each violated bound, as 'cosine_min 0.9841 < 0.99 on 'embedding' (short by 0.0059)'."""
        out = []
        for o in self.outputs:
            if o.exact:
                if o.mismatched:
                    out.append(f"{o.mismatched} element(s) of {o.name!r} differ (exact output)")
                continue
            checks = []
            if o.embedding_like:
                checks += [("cosine", o.cosine), ("cosine_min", o.cosine_min)]
            if "max_abs" in tolerances:
                checks.append(("max_abs", o.max_abs))
            if not o.embedding_like or "max_rel_all" in tolerances:
                checks.append(("max_rel", o.max_rel))
            for name, value in checks:
                bound = tolerances.get(name)
                if bound is None:
                    continue
                if name in HIGHER_IS_BETTER and not value >= bound:
                    out.append(
                        f"{name} {value:.4f} < {bound:g} on {o.name!r} (short by {bound - value:.4f})"
                    )
                elif name not in HIGHER_IS_BETTER and not value <= bound:
                    out.append(
                        f"{name} {value:.3g} > {bound:g} on {o.name!r} ({value / bound:.1f}x the bound)"
                        if bound > 0
                        else f"{name} {value:.3g} > 0 on {o.name!r}"
                    )
        return out

    def worst_margin(self, tolerances: Mapping[str, float]) -> float:
        """How far the worst cosine-type metric is from 1 (search ranking: lower is better)."""
        worst = 0.0
        for o in self.outputs:
            if o.embedding_like:
                worst = max(worst, 1.0 - o.cosine_min, (1.0 - o.cosine) * 2)
            elif not o.exact:
                worst = max(worst, o.max_rel)
        return worst

    def summary(self) -> str:
        parts = []
        for o in self.outputs:
            if o.exact:
                parts.append(f"{o.name}: {'exact' if not o.mismatched else 'differs'}")
            elif o.embedding_like:
                parts.append(f"{o.name}: cos {o.cosine:.4f} min {o.cosine_min:.4f}")
            else:
                parts.append(f"{o.name}: max_rel {o.max_rel:.2g}")
        return ", ".join(parts)


def compare(name: str, reference: Sequence[np.ndarray], got: Sequence[np.ndarray]) -> OutputError:
    """Errors of one output over all held-out samples (arrays in matching order)."""
    ref0 = reference[0]
    if ref0.dtype.kind not in "fc":
        mismatched = sum(
            int(np.sum(np.asarray(r) != np.asarray(g))) if np.shape(r) == np.shape(g) else r.size
            for r, g in zip(reference, got, strict=True)
        )
        return OutputError(name, exact=True, mismatched=mismatched)
    last = ref0.shape[-1] if ref0.ndim else 1
    err = OutputError(name)
    rows_ref, rows_got = [], []
    for r, g in zip(reference, got, strict=True):
        r64 = np.asarray(r, dtype=np.float64)
        g64 = np.asarray(g, dtype=np.float64)
        if r64.shape != g64.shape:
            raise ValueError(
                f"output {name!r}: shape {list(g64.shape)}, expected {list(r64.shape)}"
            )
        diff = np.abs(r64 - g64)
        if diff.size:
            err.max_abs = max(
                err.max_abs, float(np.nanmax(diff)) if not np.isnan(diff).any() else math.inf
            )
        scale = float(np.max(np.abs(r64))) if r64.size else 0.0
        err.max_rel = max(err.max_rel, err.max_abs / scale if scale > 0 else err.max_abs)
        if last >= 2:
            rows_ref.append(r64.reshape(-1, last))
            rows_got.append(g64.reshape(-1, last))
    if rows_ref:
        a, b = np.concatenate(rows_ref), np.concatenate(rows_got)
        ref_norms = np.linalg.norm(a, axis=1)
        norms = np.maximum(ref_norms * np.linalg.norm(b, axis=1), np.finfo(np.float64).tiny)
        keep = ref_norms > 0  # an all-zero reference row (padding) says nothing about direction
        # (an all-zero candidate row against a non-zero reference is cosine 0, not skipped)
        cos = np.sum(a * b, axis=1)[keep] / norms[keep] if keep.any() else np.ones(1)
        cos = np.nan_to_num(cos, nan=-1.0)
        err.cosine, err.cosine_min = float(np.mean(cos)), float(np.min(cos))
    return err


def evaluate(
    outputs_of: Callable[[int], Mapping[str, np.ndarray]],
    reference: Sequence[Mapping[str, np.ndarray]],
) -> Accuracy:
    """``outputs_of(k)``: the candidate's judged outputs on held-out sample k."""
    got = [outputs_of(k) for k in range(len(reference))]
    names = list(reference[0]) if reference else []
    return Accuracy([compare(n, [r[n] for r in reference], [g[n] for g in got]) for n in names])
