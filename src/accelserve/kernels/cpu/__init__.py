"""The ``cpu`` provider: BLAS for matrix products, numba-compiled fused row kernels for the
memory-bound ops (one pass over memory, parallel over rows). Kernels compile on first use and
are cached on disk (``cache=True``); 16-bit inputs are computed in float32."""
