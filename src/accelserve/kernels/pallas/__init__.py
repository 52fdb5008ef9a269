"""The ``pallas`` provider: JAX Pallas kernels for TPUs on jax arrays.

Kernels use BlockSpec grids, float32 VMEM accumulators and reduce over the innermost
("arbitrary") grid axis. Tile sizes live in frozen dataclasses validated at construction
(``_tiles.py``). Every wrapper takes ``interpret: bool = False``; off-TPU the dispatcher passes
``interpret=True`` and the same kernels run on CPU through Pallas' interpreter.
"""
