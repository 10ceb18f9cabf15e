"""Standard attention: materialize the scores S = scale Q K^T [B, Hq, Lq, Lk], softmax them
into P in place, then O = P V. This is the baseline the streaming kernel is timed against,
and the memory it needs grows with Lq * Lk.

Parallel over (b, h, block of ROWS query rows): each task fills its rows of the full S buffer
with one GEMM, runs a three-pass softmax over each row (max, exp and sum, normalize), and
multiplies by V. Nothing is tiled along Lk: that is the point of the comparison. The exp is
the streaming kernel's (``tile.exp_shifted``), so the two differ only in what they hold.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._config import FASTMATH
from .tile import cdiv, exp_shifted, mask_max, matmul_nn, matmul_nt, row_span

ROWS = 64  # query rows per parallel task


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def standard_kernel(Q, K, V, S, O, LSE, scale, q_offset, causal, window):
    """Q [B, Hq, Lq, D], K/V [B, Hkv, Lk, D], S [B, Hq, Lq, Lk] workspace -> O, LSE."""
    B, Hq, Lq, D = Q.shape
    Hkv, Lk = K.shape[1], K.shape[2]
    group = Hq // Hkv
    Tr = cdiv(Lq, ROWS)
    for task in prange(B * Hq * Tr):
        bh, i = divmod(np.int64(task), Tr)  # (int64: prange's index may be unsigned)
        b, h = divmod(bh, Hq)
        hk = h // group
        i0 = i * ROWS
        i1 = min(i0 + ROWS, Lq)
        Si = S[b, h, i0:i1]  # [rows, Lk]
        matmul_nt(scale, Q[b, h, i0:i1], K[b, hk], Si)  # scaled score rows (BLAS unless few)
        P_row = np.empty(Lk, np.float32)  # exp output (must not alias its input)
        for r in range(i1 - i0):
            lo, hi = row_span(q_offset + i0 + r, Lk, causal, window)
            row = Si[r]
            mx = mask_max(row, lo, hi, np.float32(-np.inf))  # the streaming tile's masking
            if mx == -np.inf:  # the row sees no key: P = 0, O = 0, LSE = -inf
                row[:] = 0.0
                LSE[b, h, i0 + r] = -np.inf
                continue
            total = exp_shifted(row, mx, P_row)  # the same exp as the streaming kernel
            inv = np.float32(1.0) / total
            for c in range(Lk):
                row[c] = P_row[c] * inv  # P, normalized
            LSE[b, h, i0 + r] = mx + math.log(total)
        matmul_nn(Si, V[b, hk], 0.0, O[b, h, i0:i1])  # O = P V
