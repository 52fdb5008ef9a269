"""Pallas tile sizes are validated at construction, with the valid range in the message."""

from __future__ import annotations

import pytest

from accelserve.errors import InvalidArgumentError

tiles = pytest.importorskip("accelserve.kernels.pallas._tiles")


def test_defaults_are_valid() -> None:
    assert tiles.MatmulTiles().block_n % 128 == 0
    assert tiles.RowTiles(8, 128).block_rows == 8
    assert tiles.PoolTiles(16, 256).block_t == 256


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: tiles.MatmulTiles(block_m=12), r"MatmulTiles.block_m: expected a multiple of 8"),
        (
            lambda: tiles.MatmulTiles(block_n=100),
            r"MatmulTiles.block_n: expected a multiple of 128 in \[128, 4096\]; received 100",
        ),
        (lambda: tiles.MatmulTiles(block_k=0), r"block_k"),
        (lambda: tiles.RowTiles(block_cols=64), r"RowTiles.block_cols"),
        (lambda: tiles.PoolTiles(block_b=3), r"PoolTiles.block_b"),
    ],
)
def test_invalid_tiles_are_rejected(make: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        make()  # type: ignore[operator]


def test_tiles_are_frozen() -> None:
    t = tiles.MatmulTiles()
    with pytest.raises(AttributeError):
        t.block_m = 8  # type: ignore[misc]


def test_custom_tiles_reach_the_kernel() -> None:
    import numpy as np

    from accelserve.kernels.pallas.matmul import blocked
    from accelserve.kernels.testing import assert_close, random_array

    a, b = random_array((40, 300), "float32", seed=1), random_array((300, 260), "float32", seed=2)
    got = blocked(a, b, interpret=True, tiles=tiles.MatmulTiles(8, 128, 128))
    assert_close(np.asarray(got), a.astype(np.float64) @ b, 1e-4, 1e-4)
