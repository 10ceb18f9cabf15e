"""Standard attention: materialize the scores S = scale Q K^T [B, Hq, Lq, Lk], softmax them
into P in place, then O = P V. This is the baseline the streaming kernel is timed against,
and the memory it needs grows with Lq * Lk.

Parallel over blocks of query rows (``standard_rows``): each task fills its rows of the full
S buffer with one GEMM, runs a three-pass softmax over each row (max, exp and sum,
normalize), and multiplies by V. A block is ROWS rows of one head in prefill, and in decode
the g query heads that share a KV head (K/V read once per group, as streaming does).
Nothing is tiled along Lk: that is the point of the comparison. The exp is the streaming
kernel's (``tile.exp_shifted``), so the two differ only in what they hold. So are the masks
(``tile.mask_spans``); a sink logit joins each row's max and sum.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._config import FASTMATH
from .smallmm import gemm_nn, gemm_nt
from .tile import cdiv, exp_shifted, mask_max, mask_spans

ROWS = 64  # query rows per parallel task

# This kernel's products span whole rows of S (N = Lk keys). With this many rows or
# fewer (decode: one query row per task) BLAS's gemm is slower than plain loops that stream
# each K/V row through the cache once (2.9x at Lk = 8192 on an Intel host). The streaming
# decode tile measures its own choice per host (``kernels.autotune``).
SMALL_ROWS = 8


@njit(cache=True)
def _has_nan(row, lo, hi, s_hi):
    """A NaN among the visible scores [0, s_hi) and [lo, hi) (checked only for a row whose
    max is -inf: rare, so the scan costs nothing in the common case)."""
    for c in range(s_hi):
        if np.isnan(row[c]):
            return True
    for c in range(lo, hi):
        if np.isnan(row[c]):
            return True
    return False


@njit(cache=True, fastmath=FASTMATH)
def standard_rows(Qr, K, V, Sr, Or, LSEr, qpos, scale, mk, sink):
    """Rows Qr [M, D] at absolute positions qpos [M] against all of K, V [Lk, D] under the
    Mask mk: the score rows Sr [M, Lk] (a slice of the full S), softmaxed in place into P,
    then Or = P V [M, D] and LSEr [M]. sink [M]: each row's sink logit (-inf: none), one
    more term of the softmax's denominator."""
    Lk = K.shape[0]
    few = Qr.shape[0] <= SMALL_ROWS  # plain loops for few rows, else BLAS
    gemm_nt(scale, Qr, K, Sr, few)  # scaled score rows
    P_row = np.empty(Lk, np.float32)  # exp output (must not alias its input)
    for r in range(Qr.shape[0]):
        s_hi, lo, hi = mask_spans(qpos[r], Lk, mk)
        row = Sr[r]
        mx = mask_max(row, lo, hi, sink[r], s_hi)  # the streaming tile's masking
        if mx == -np.inf and not _has_nan(row, lo, hi, s_hi):
            # the row sees no key: P = 0, O = 0, LSE = -inf (a NaN it sees, which the max
            # may skip, goes on below and makes the row NaN)
            row[:] = 0.0
            LSEr[r] = -np.inf
            continue
        total = exp_shifted(row, mx, P_row)  # the same exp as the streaming kernel
        if sink[r] != -np.inf:
            total += math.exp(sink[r] - mx)  # the sink's term (P keeps no column for it)
        inv = np.float32(1.0) / total
        for c in range(Lk):
            row[c] = P_row[c] * inv  # P, normalized
        LSEr[r] = mx + math.log(total)
    gemm_nn(Sr, V, 0.0, Or, few)  # O = P V


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def standard_kernel(Q, K, V, S, O, LSE, scale, q_offset, mk, sink):
    """Q [B, Hq, Lq, D], K/V [B, Hkv, Lk, D], S [B, Hq, Lq, Lk] workspace -> O, LSE; mk the
    Mask, sink [Hq] the sink logits (-inf: none).

    Prefill: one task per (b, h, block of ROWS query rows). Decode (Lq == 1): one task per
    (b, KV head) whose rows are its g = Hq / Hkv query heads, so each K/V row is read once
    per group, as the streaming decode does (with Lq == 1 those heads' rows of Q, S and O
    are contiguous).
    """
    B, Hq, Lq, D = Q.shape
    Hkv = K.shape[1]
    group = Hq // Hkv
    if Lq == 1:
        Lk = K.shape[2]
        for task in prange(B * Hkv):
            b, hk = divmod(np.int64(task), Hkv)  # (int64: prange's index may be unsigned)
            h0, h1 = hk * group, (hk + 1) * group
            # the heads' single rows as [Hq, .] matrices: contiguous, so the loops vectorize
            standard_rows(Q[b].reshape((Hq, D))[h0:h1], K[b, hk], V[b, hk],
                          S[b].reshape((Hq, Lk))[h0:h1], O[b].reshape((Hq, D))[h0:h1],
                          LSE[b].reshape(Hq)[h0:h1], np.full(group, q_offset), scale,
                          mk, sink[h0:h1])
        return
    Tr = cdiv(Lq, ROWS)
    for task in prange(B * Hq * Tr):
        bh, i = divmod(np.int64(task), Tr)
        b, h = divmod(bh, Hq)
        hk = h // group
        i0 = i * ROWS
        i1 = min(i0 + ROWS, Lq)
        standard_rows(Q[b, h, i0:i1], K[b, hk], V[b, hk], S[b, h, i0:i1], O[b, h, i0:i1],
                      LSE[b, h, i0:i1], np.arange(i0, i1) + q_offset, scale, mk,
                      np.full(i1 - i0, sink[h]))
