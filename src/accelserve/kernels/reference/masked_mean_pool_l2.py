"""Reference sentence-embedding head: mean over unmasked tokens, then L2 normalization."""

from __future__ import annotations

import numpy as np

from accelserve.kernels.reference._math import f64


def masked_mean_pool_l2(hidden: np.ndarray, mask: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    keep = np.asarray(mask) != 0  # [B, T]
    with np.errstate(all="ignore"):
        # Masked tokens contribute nothing, whatever they hold (NaN padding included).
        total = np.where(keep[:, :, None], f64(hidden), 0.0).sum(axis=1)  # [B, H]
        count = keep.sum(axis=1, keepdims=True)
        mean = total / np.maximum(count, 1)  # a row with no tokens stays all zeros
        norm = np.sqrt(np.sum(mean * mean, axis=-1, keepdims=True))
        return (mean / np.maximum(norm, eps)).astype(np.float32)
