"""Tile sizes for the Pallas kernels, validated at construction.

TPU blocks must have their last two dimensions divisible by (8, 128) or equal to the array's
full dimensions; ``fit`` clamps a tile to a smaller array (a full-dimension block is valid).
"""

from __future__ import annotations

from dataclasses import dataclass

from accelserve.errors import InvalidArgumentError

SUBLANES, LANES = 8, 128
VMEM_BLOCK_BYTES = 2 << 20  # per input block; double-buffered blocks stay well inside VMEM


def _check(owner: str, name: str, value: int, multiple: int, low: int, high: int) -> None:
    if not isinstance(value, int) or not low <= value <= high or value % multiple:
        raise InvalidArgumentError(
            f"{owner}.{name}: expected a multiple of {multiple} in [{low}, {high}]; "
            f"received {value!r}"
        )


def fit(block: int, dim: int) -> int:
    """The block actually used along a dimension of size ``dim``."""
    return dim if dim <= block else block


@dataclass(frozen=True, slots=True)
class MatmulTiles:
    block_m: int = 256
    block_n: int = 256
    block_k: int = 512

    def __post_init__(self) -> None:
        _check("MatmulTiles", "block_m", self.block_m, SUBLANES, SUBLANES, 4096)
        _check("MatmulTiles", "block_n", self.block_n, LANES, LANES, 4096)
        _check("MatmulTiles", "block_k", self.block_k, LANES, LANES, 8192)


@dataclass(frozen=True, slots=True)
class RowTiles:
    """Tiles of a row-wise op over an [R, C] view: rows per block, columns per block."""

    block_rows: int = 256
    block_cols: int = 2048

    def __post_init__(self) -> None:
        _check("RowTiles", "block_rows", self.block_rows, SUBLANES, SUBLANES, 8192)
        _check("RowTiles", "block_cols", self.block_cols, LANES, LANES, 65536)


@dataclass(frozen=True, slots=True)
class PoolTiles:
    """masked_mean_pool_l2: batch rows per block and tokens per block."""

    block_b: int = 8
    block_t: int = 128

    def __post_init__(self) -> None:
        _check("PoolTiles", "block_b", self.block_b, SUBLANES, SUBLANES, 1024)
        _check("PoolTiles", "block_t", self.block_t, LANES, LANES, 8192)


# Defaults on a TPU, and smaller ones in the interpreter so that small test shapes still
# span several blocks and exercise the edges.
TPU_MATMUL, INTERPRET_MATMUL = MatmulTiles(), MatmulTiles(8, 128, 128)
TPU_ROWS, INTERPRET_ROWS = RowTiles(), RowTiles(8, 128)
TPU_POOL, INTERPRET_POOL = PoolTiles(), PoolTiles(8, 128)
