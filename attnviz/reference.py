"""The float64 oracle: naive masked softmax attention, obviously correct and slow.

Materializes S, applies the mask from ``masks.visible_mask``, softmaxes each row with the max
subtracted, multiplies by V. GQA by repeating K/V heads (fine for an oracle). A row that sees
no key gets O = 0 and LSE = -inf, the convention the kernels follow.
"""
from __future__ import annotations

import numpy as np

from .masks import visible_mask


def attention_reference(q, k, v, *, causal=True, q_offset=None, window=None, scale=None):
    """q [..., Hq, Lq, D] or [Lq, D]; k, v [..., Hkv, Lk, D] or [Lk, D] -> (O, LSE) in float64."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    Lq, D = q.shape[-2:]
    Lk = k.shape[-2]
    if q.ndim == 4 and q.shape[1] != k.shape[1]:
        group = q.shape[1] // k.shape[1]
        k = np.repeat(k, group, axis=1)  # [B, Hq, Lk, D]
        v = np.repeat(v, group, axis=1)
    if q_offset is None:
        q_offset = Lk - Lq
    if scale is None:
        scale = 1.0 / np.sqrt(D)
    vis = visible_mask(Lq, Lk, causal=causal, q_offset=q_offset, window=window or 0)
    S = scale * (q @ np.swapaxes(k, -1, -2))  # [..., Lq, Lk]
    S = np.where(vis, S, -np.inf)
    m = S.max(axis=-1, keepdims=True)
    seen = np.isfinite(m)  # rows that see at least one key
    P = np.exp(S - np.where(seen, m, 0.0))
    l = P.sum(axis=-1, keepdims=True)
    O = np.where(seen, (P @ v) / np.where(seen, l, 1.0), 0.0)
    lse = np.where(seen, m + np.log(np.where(seen, l, 1.0)), -np.inf)[..., 0]
    return O, lse
