"""The ``reference`` provider: plain NumPy, float64 accumulation, written to be read.

Every other provider is tested against these functions. They favour clarity over speed; the
naive and unrolled matmul loops run in Python and are meant for small shapes.
"""
