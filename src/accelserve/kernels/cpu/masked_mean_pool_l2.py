"""Fused sentence-embedding head on CPU: masked mean over tokens, then L2 normalization.

Pass 1 (parallel over the batch) adds up only the unmasked token rows, so padding is never
read; pass 2 (parallel over the batch) divides by the token count and
normalizes the [B, H] result, which is tiny next to the hidden states.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from accelserve.kernels.cpu._numba import contiguous, kernel, quiet


def _pool(hidden, keep, out):
    batch, tokens, width = hidden.shape
    for b in prange(batch):
        kept_tokens = np.empty(tokens, dtype=np.int64)
        kept = 0
        for tok in range(tokens):
            if keep[b, tok]:
                kept_tokens[kept] = tok
                kept += 1
        acc = np.zeros(width, dtype=out.dtype)  # private: provably no alias, so it vectorizes
        # Four token rows per sweep: a quarter of the accumulator loads and stores.
        main = kept - kept % 4
        for g in range(0, main, 4):
            r0, r1 = hidden[b, kept_tokens[g]], hidden[b, kept_tokens[g + 1]]
            r2, r3 = hidden[b, kept_tokens[g + 2]], hidden[b, kept_tokens[g + 3]]
            for h in range(width):
                acc[h] += (r0[h] + r1[h]) + (r2[h] + r3[h])
        for g in range(main, kept):
            row = hidden[b, kept_tokens[g]]
            for h in range(width):
                acc[h] += row[h]
        out[b] = acc


def _normalize(keep, eps, out):
    batch, width = out.shape
    for b in prange(batch):
        count = 0
        for tok in range(keep.shape[1]):
            count += 1 if keep[b, tok] else 0
        inv_count = np.float32(1.0) / np.float32(max(count, 1))
        row = out[b]
        acc = np.float32(0.0)
        for h in range(width):
            row[h] *= inv_count
            acc += row[h] * row[h]
        norm = np.sqrt(acc)
        inv = np.float32(1.0) / (norm if (norm > eps or norm != norm) else eps)
        for h in range(width):
            row[h] *= inv


_pool_k = kernel(_pool)
_normalize_k = kernel(_normalize)


@quiet
def masked_mean_pool_l2(hidden: np.ndarray, mask: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    h = contiguous(hidden, np.dtype(np.float32))
    keep = np.ascontiguousarray(mask != 0)
    batch, _, width = h.shape
    out = np.empty((batch, width), dtype=np.float32)
    _pool_k(h, keep, out, work_bytes=h.nbytes)
    _normalize_k(keep, np.float32(eps), out, work_bytes=out.nbytes)
    return out
