"""Collapse a broadcasting ``a + b`` into a 2-d problem that a tiled kernel can walk.

Dimensions where ``a`` and ``b`` broadcast the same way merge into one, so almost every real
case ([M, N] + [N], [B, T, H] + [B, T, 1], same shapes...) becomes an [R, C] grid where each
operand is either full along a dimension or repeated along it (stride 0). Cases that need more
than two groups return None and the caller materializes the broadcast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Plan2D:
    out_shape: tuple[int, ...]
    rows: int
    cols: int
    a_full: tuple[bool, bool]  # a spans (rows, cols) fully; False means repeated (stride 0)
    b_full: tuple[bool, bool]

    def operand_shape(self, full: tuple[bool, bool]) -> tuple[int, int]:
        """The 2-d shape a contiguous operand has in this plan: (R or 1, C or 1)."""
        return (self.rows if full[0] else 1, self.cols if full[1] else 1)

    def strides(self, full: tuple[bool, bool]) -> tuple[int, int]:
        """Element strides of a contiguous operand over the (rows, cols) grid."""
        return ((self.cols if full[1] else 1) if full[0] else 0, 1 if full[1] else 0)


def plan_2d(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> Plan2D | None:
    """The [R, C] view of broadcasting ``a_shape`` with ``b_shape`` (shapes must broadcast)."""
    rank = max(len(a_shape), len(b_shape))
    pa = (1,) * (rank - len(a_shape)) + tuple(a_shape)
    pb = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    out = tuple(max(x, y) for x, y in zip(pa, pb, strict=True))
    groups: list[tuple[int, bool, bool]] = []  # (size, a full, b full)
    for x, y, o in zip(pa, pb, out, strict=True):
        if o == 1:
            continue
        pattern = (x == o, y == o)
        if groups and groups[-1][1:] == pattern:
            groups[-1] = (groups[-1][0] * o, *pattern)
        else:
            groups.append((o, *pattern))
    if len(groups) > 2:
        return None
    while len(groups) < 2:
        groups.insert(0, (1, True, True))
    (r, ar, br), (c, ac, bc) = groups
    return Plan2D(out, r, c, (ar, ac), (br, bc))


def numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
