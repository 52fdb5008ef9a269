"""The [R, C] collapse of broadcasting used by the Triton and Pallas add kernels."""

from __future__ import annotations

import numpy as np
import pytest

from accelserve.kernels._broadcast import plan_2d


@pytest.mark.parametrize(
    ("a", "b", "rows", "cols", "a_full", "b_full"),
    [
        ((4, 5), (4, 5), 1, 20, (True, True), (True, True)),
        ((4, 5), (5,), 4, 5, (True, True), (False, True)),
        ((4, 5), (4, 1), 4, 5, (True, True), (True, False)),
        ((2, 3, 4), (1,), 1, 24, (True, True), (True, False)),
        ((1, 5), (4, 1), 4, 5, (False, True), (True, False)),
        ((1,), (1,), 1, 1, (True, True), (True, True)),
    ],
)
def test_plans(a: tuple[int, ...], b: tuple[int, ...], rows: int, cols: int,
               a_full: tuple[bool, bool], b_full: tuple[bool, bool]) -> None:  # fmt: skip
    plan = plan_2d(a, b)
    assert plan is not None
    assert (plan.rows, plan.cols, plan.a_full, plan.b_full) == (rows, cols, a_full, b_full)
    assert plan.out_shape == np.broadcast_shapes(a, b)


def test_strides_walk_contiguous_operands() -> None:
    plan = plan_2d((6, 7), (7,))
    assert plan is not None
    a, b = np.arange(42.0).reshape(6, 7), np.arange(7.0) * 100
    ra, ca = plan.strides(plan.a_full)
    rb, cb = plan.strides(plan.b_full)
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    for i in range(plan.rows):
        for j in range(plan.cols):
            assert flat_a[i * ra + j * ca] + flat_b[i * rb + j * cb] == (a + b)[i, j]


def test_three_groups_have_no_plan() -> None:
    assert plan_2d((3, 1, 5), (1, 7, 1)) is None
