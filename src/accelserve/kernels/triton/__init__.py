"""The ``triton`` provider: Triton-lang kernels for NVIDIA GPUs on torch CUDA tensors.

With ``TRITON_INTERPRET=1`` set before triton is imported, the same kernels run on torch CPU
tensors through Triton's interpreter (slow: for tests on tiny shapes). Every kernel computes in
float32 and casts once on store, which also keeps the interpreter away from bf16 arithmetic.
"""
