"""Several Prometheus expositions (text format 0.0.4) as one, each sample labelled with where
it came from: the cluster's ``/metrics`` is every replica's, told apart by ``node`` and
``replica`` (Prometheus users sum them with ``sum by (model)``).

The format asks for one HELP and one TYPE per family and a family's samples together, so the
replicas' texts cannot simply be joined: the families are gathered in the order they first
appear, each with its samples from every replica. Lines are handled as text (no parse into
floats and back), so counters keep their exact integers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass
class _Family:
    help: str | None = None  # the whole "# HELP ..." line
    type: str | None = None  # the kind, from "# TYPE name kind"
    samples: list[str] = field(default_factory=list)


def merge_expositions(parts: Iterable[tuple[dict[str, str], str]]) -> str:
    """``(labels, text)`` per source -> one exposition: every sample of ``text`` gets
    ``labels`` first (a family that two sources type differently keeps the first's type and
    samples)."""
    families: dict[str, _Family] = {}
    for labels, text in parts:
        extra = ",".join(f'{key}="{escape_label(value)}"' for key, value in labels.items())
        seen: dict[str, str | None] = {}  # this source's families -> its type for them
        current: str | None = None
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("#"):
                words = line.split(None, 3)
                if len(words) >= 3 and words[1] in ("HELP", "TYPE"):
                    current = words[2]
                    family = families.setdefault(current, _Family())
                    if words[1] == "HELP":
                        family.help = family.help or line
                    else:
                        kind = words[3].strip() if len(words) > 3 else "untyped"
                        seen[current] = kind
                        family.type = family.type or kind
                continue
            name = _sample_name(line)
            if current is None or not _belongs(name, current):
                current = name  # a sample without HELP/TYPE: a family of its own, untyped
                families.setdefault(current, _Family())
            family = families[current]
            if seen.get(current, family.type) != family.type:
                continue  # typed otherwise by an earlier source: not this family
            family.samples.append(_relabel(line, name, extra))
    lines: list[str] = []
    for name, family in families.items():
        if family.help is not None:
            lines.append(family.help)
        lines.append(f"# TYPE {name} {family.type or 'untyped'}")  # explicit: one family
        lines.extend(family.samples)
    return "\n".join(lines) + "\n" if lines else ""


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample_name(line: str) -> str:
    end = len(line)
    for stop in ("{", " ", "\t"):
        index = line.find(stop)
        if index != -1:
            end = min(end, index)
    return line[:end]


def _belongs(sample: str, family: str) -> bool:
    """Whether a sample name is the family's (a histogram's or summary's ``_bucket``, ``_sum``,
    ``_count``, a counter's ``_total``, ``_created``)."""
    if sample == family:
        return True
    suffix = sample.removeprefix(family)
    return suffix != sample and suffix in ("_bucket", "_sum", "_count", "_total", "_created")


def _relabel(line: str, name: str, extra: str) -> str:
    if not extra:
        return line
    rest = line[len(name) :]
    if rest.startswith("{"):
        inner = rest[1:]
        return f"{name}{{{extra}{'' if inner.startswith('}') else ','}{inner}"
    return f"{name}{{{extra}}}{rest}"
