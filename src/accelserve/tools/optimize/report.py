"""What ``accelserve optimize`` prints and writes: one line per candidate with its verdict,
CSV, and a PNG of speed against accuracy (one point per candidate, the chosen one marked)."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from accelserve.tools.advisor.candidates import Measurement
from accelserve.tools.optimize.accuracy import Accuracy

CSV_COLUMNS = (
    "candidate",
    "description",
    "size_mb",
    "rows_per_s",
    "speedup",
    "lat_p99_ms",
    "cosine_mean",
    "cosine_min",
    "max_abs",
    "max_rel",
    "passes",
    "chosen",
    "verdict",
)


@dataclass
class Row:
    label: str
    description: str
    size_mb: float = math.nan
    accuracy: Accuracy | None = None
    failures: list[str] = field(default_factory=list)
    measurement: Measurement | None = None
    error: str = ""
    verdict: str = ""
    chosen: bool = False

    repeats: list[Measurement] = field(default_factory=list)  # later interleaved rounds

    def _ok(self) -> list[Measurement]:
        return [m for m in (self.measurement, *self.repeats) if m is not None and m.ok]

    @property
    def rows_per_s(self) -> float:
        """The median over the rounds that ran without failures."""
        ok = self._ok()
        return statistics.median(m.rows_per_s for m in ok) if ok else 0.0

    @property
    def p99_ms(self) -> float:
        ok = self._ok()
        return statistics.median(m.p99_ms for m in ok) if ok else math.nan

    @property
    def passes(self) -> bool:
        return not self.error and self.accuracy is not None and not self.failures

    def worst(self, key: str) -> float:
        """The worst value of one metric over the outputs (min for cosines, max for errors)."""
        if self.accuracy is None:
            return math.nan
        values = [getattr(o, key) for o in self.accuracy.outputs if not o.exact]
        values = [v for v in values if not math.isnan(v)]
        if not values:
            return math.nan
        return min(values) if key.startswith("cosine") else max(values)


def verdicts(rows: Sequence[Row], original: Row, min_gain: float) -> Row | None:
    """Choose the fastest passing candidate at least ``min_gain`` faster than the original and
    say why each other one lost."""
    base = original.rows_per_s
    passing = [r for r in rows if r.passes and r.rows_per_s > 0]
    best = max(passing, key=lambda r: r.rows_per_s, default=None)
    chosen = best if best is not None and best.rows_per_s >= base * min_gain else None
    original.verdict = "baseline" + ("" if chosen else " (kept: no candidate passes and is faster)")
    for r in rows:
        r.chosen = r is chosen
        if r.error:
            r.verdict = f"rejected: error: {r.error}"
        elif r.failures:
            r.verdict = "rejected: failed tolerance: " + "; ".join(r.failures)
        elif r is chosen:
            r.verdict = f"chosen: {r.rows_per_s / base:.2f}x the original" if base else "chosen"
        elif r.rows_per_s <= 0:
            r.verdict = "rejected: its speed could not be measured"
        elif chosen is not None:
            r.verdict = (
                f"rejected: slower: {r.rows_per_s:,.0f} rows/s vs {chosen.rows_per_s:,.0f} "
                f"of {chosen.label}"
            )
        else:
            r.verdict = (
                f"rejected: slower: {r.rows_per_s / base:.2f}x the original, below the "
                f"{min_gain:.2f}x a new version needs"
            )
    return chosen


def _num(x: float, fmt: str) -> str:
    return "-" if math.isnan(x) else format(x, fmt)


def table(rows: Sequence[Row], original: Row) -> str:
    base = original.rows_per_s
    head = ["", "candidate", "MB", "rows/s", "speedup", "p99 ms", "cos mean", "cos min"]
    head += ["max_rel", "verdict"]
    lines = [head]
    for r in [original, *rows]:
        lines.append(
            [
                "*" if r.chosen else "",
                r.label,
                _num(r.size_mb, ".1f"),
                _num(r.rows_per_s, ",.0f") if r.rows_per_s else "-",
                _num(r.rows_per_s / base, ".2f") + "x" if base and r.rows_per_s else "-",
                _num(r.p99_ms, ".2f"),
                _num(r.worst("cosine"), ".4f"),
                _num(r.worst("cosine_min"), ".4f"),
                _num(r.worst("max_rel"), ".2g"),
                r.verdict,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
        for line in lines
    )


def _csv_row(r: Row, base: float) -> Mapping[str, object]:
    def cell(x: float, digits: int) -> object:
        return "" if math.isnan(x) else round(x, digits)

    return {
        "candidate": r.label,
        "description": r.description,
        "size_mb": cell(r.size_mb, 2),
        "rows_per_s": round(r.rows_per_s, 1),
        "speedup": round(r.rows_per_s / base, 3) if base else "",
        "lat_p99_ms": cell(r.p99_ms, 3),
        "cosine_mean": cell(r.worst("cosine"), 5),
        "cosine_min": cell(r.worst("cosine_min"), 5),
        "max_abs": cell(r.worst("max_abs"), 6),
        "max_rel": cell(r.worst("max_rel"), 6),
        "passes": r.passes,
        "chosen": r.chosen,
        "verdict": r.verdict,
    }


def write_csv(path: str | Path, rows: Sequence[Row], original: Row) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in [original, *rows]:
            writer.writerow(_csv_row(r, original.rows_per_s))


def write_png(path: str | Path, rows: Sequence[Row], original: Row, model: str) -> str:
    """Speed (x) against accuracy (y: worst min cosine, else 1 - worst max_rel); '' or a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG written"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in [original, *rows]:
        if not r.rows_per_s:
            continue
        y = r.worst("cosine_min")
        if math.isnan(y):
            y = 1.0 - r.worst("max_rel") if r.accuracy is not None else 1.0
        color = "tab:green" if r.chosen else ("tab:blue" if r.passes else "tab:red")
        marker = "*" if r.chosen else ("s" if r is original else "o")
        ax.scatter(r.rows_per_s, y, c=color, marker=marker, s=160 if r.chosen else 50, zorder=3)
        ax.annotate(
            r.label, (r.rows_per_s, y), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    ax.set_xlabel("rows/s through the scheduler")
    ax.set_ylabel("accuracy (min cosine, or 1 - max rel. error)")
    ax.set_title(f"accelserve optimize {model}: green * chosen, red fails tolerance")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return ""
