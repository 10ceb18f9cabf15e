"""Block-wise streaming attention: the parallel prefill and split-KV decode drivers.

Both drivers only decide *which rows meet which keys on which thread*; the arithmetic is
``tile.attend_span`` -> ``tile.tile_update`` (see ``kernels/tile.py``).

* Prefill (Lq > 1): one task per (b, h, Q block i); each walks its visible KV tiles in order
  and normalizes once at the end. Memory: a [Br, Bc] score tile and a [Br, D] accumulator per
  task, independent of Lk.
* Decode (Lq == 1): one query row per head cannot keep two cores busy. The g = Hq / Hkv query
  heads that share a KV head are stacked as the rows of one block (GQA by indexing, K/V read
  once per group), the visible key range is cut into chunks computed in parallel, and the
  partial (m, l, acc) of the chunks are merged exactly (Flash-Decoding).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .tile import attend_span, cdiv, finalize, init_state, merge_state, row_span

# Chunks of at least this many keys per decode task: below it, scheduling costs more than it
# gains; above it, enough chunks to feed every core.
DECODE_MIN_CHUNK = 512


@njit(cache=True, inline="always")
def _zigzag(t, Tr):
    """Visit Q blocks as 0, Tr-1, 1, Tr-2, ...: under a causal mask late blocks cost more, and
    static scheduling gives each thread a contiguous run of tasks; this keeps the runs even."""
    half = t // 2
    return half if t % 2 == 0 else Tr - 1 - half


@njit(parallel=True, cache=True)
def prefill_kernel(Q, K, V, O, LSE, scale, q_offset, causal, window, Br, Bc):
    """Q [B, Hq, Lq, D], K/V [B, Hkv, Lk, D] float32 -> O [B, Hq, Lq, D], LSE [B, Hq, Lq]."""
    B, Hq, Lq, D = Q.shape
    Hkv, Lk = K.shape[1], K.shape[2]
    group = Hq // Hkv
    Tr = cdiv(Lq, Br)
    for task in prange(B * Hq * Tr):
        bh, t = divmod(np.int64(task), Tr)  # (int64: prange's index may be unsigned)
        b, h = divmod(bh, Hq)
        hk = h // group  # GQA: query head h reads KV head h // group
        i = _zigzag(t, Tr)
        i0 = i * Br
        i1 = min(i0 + Br, Lq)
        n = i1 - i0
        qpos = np.arange(i0, i1) + q_offset  # absolute positions of the rows
        m = np.empty(n, np.float32)
        l = np.empty(n, np.float32)
        acc = np.empty((n, D), np.float32)
        alpha = np.empty(n, np.float32)
        S = np.empty(2 * n * Bc, np.float32)  # S and P~ tiles
        init_state(m, l, acc)
        # KV tiles any row of this block can see: from the first row's lo to the last row's
        # hi (spans move right with the row); the rest are skipped without being visited
        j_lo = row_span(qpos[0], Lk, causal, window)[0] // Bc
        j_hi = cdiv(row_span(qpos[n - 1], Lk, causal, window)[1], Bc)
        attend_span(Q[b, h, i0:i1], K[b, hk], V[b, hk], qpos, j_lo, j_hi, Bc, Lk,
                    causal, window, scale, m, l, acc, S, alpha)
        finalize(m, l, acc, O[b, h, i0:i1], LSE[b, h, i0:i1])


@njit(parallel=True, cache=True)
def decode_kernel(Q, K, V, O, LSE, scale, q_offset, causal, window, Bc, per):
    """Q [B, Hq, 1, D], K/V [B, Hkv, Lk, D] -> O [B, Hq, 1, D], LSE [B, Hq, 1] (split-KV,
    ``per`` KV tiles per chunk: see ``api.decode_split``)."""
    B, Hq, _, D = Q.shape
    Hkv, Lk = K.shape[1], K.shape[2]
    g = Hq // Hkv
    # every row of a decode group sits at the same position: one span of tiles for all,
    # cut into C chunks of `per` tiles each
    kv_lo, kv_hi = row_span(q_offset, Lk, causal, window)
    j_lo = kv_lo // Bc
    j_hi = max(cdiv(kv_hi, Bc), j_lo + 1)
    C = cdiv(j_hi - j_lo, per)
    m_part = np.empty((B, Hkv, C, g), np.float32)
    l_part = np.empty((B, Hkv, C, g), np.float32)
    acc_part = np.empty((B, Hkv, C, g, D), np.float32)
    for task in prange(B * Hkv * C):
        bh, c = divmod(np.int64(task), C)
        b, hk = divmod(bh, Hkv)
        h0 = hk * g
        Qg = Q[b, h0:h0 + g, 0].copy()  # the g query heads of this KV head, [g, D]
        qpos = np.full(g, q_offset)
        m, l, acc = m_part[b, hk, c], l_part[b, hk, c], acc_part[b, hk, c]
        init_state(m, l, acc)
        lo = j_lo + c * per
        hi = min(lo + per, j_hi)
        attend_span(Qg, K[b, hk], V[b, hk], qpos, lo, hi, Bc, Lk, causal, window, scale,
                    m, l, acc, np.empty(2 * g * Bc, np.float32), np.empty(g, np.float32))
    for bh in prange(B * Hkv):
        b, hk = divmod(np.int64(bh), Hkv)
        m, l, acc = m_part[b, hk, 0], l_part[b, hk, 0], acc_part[b, hk, 0]
        for c in range(1, C):
            merge_state(m, l, acc, m_part[b, hk, c], l_part[b, hk, c], acc_part[b, hk, c])
        h0 = hk * g
        finalize(m, l, acc, O[b, h0:h0 + g, 0], LSE[b, h0:h0 + g, 0])
