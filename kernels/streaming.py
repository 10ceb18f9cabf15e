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

Masks (``tile.Mask``) reach the drivers as the visible tiles of a block: the sink tiles, then
the main run (``tile.visible_tiles``); decode cuts that list, in visit order, into chunks.
A sink logit per query head (``sink`` [Hq], -inf = none) is the initial state of that head's
rows; in decode only chunk 0 starts from it, so it enters the merged state exactly once.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .tile import NEG_INF, attend_span, cdiv, finalize, init_state, merge_state, visible_tiles


@njit(cache=True, inline="always")
def _zigzag(t, Tr):
    """Visit Q blocks as 0, Tr-1, 1, Tr-2, ...: under a causal mask late blocks cost more, and
    static scheduling gives each thread a contiguous run of tasks; this keeps the runs even."""
    half = t // 2
    return half if t % 2 == 0 else Tr - 1 - half


@njit(parallel=True, cache=True)
def prefill_kernel(Q, K, V, O, LSE, scale, q_offset, mk, sink, Br, Bc):
    """Q [B, Hq, Lq, D], K/V [B, Hkv, Lk, D] float32 -> O [B, Hq, Lq, D], LSE [B, Hq, Lq];
    mk the Mask, sink [Hq] the sink logits (-inf: none)."""
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
        init_state(m, l, acc, sink[h])
        # KV tiles any row of this block can see (the sink tiles, then the main run); the
        # rest are skipped without being visited
        j_sink, j_lo, j_hi = visible_tiles(qpos, Lk, Bc, mk)
        attend_span(Q[b, h, i0:i1], K[b, hk], V[b, hk], qpos, 0, j_sink, Bc, Lk, mk, scale,
                    m, l, acc, S, alpha)
        attend_span(Q[b, h, i0:i1], K[b, hk], V[b, hk], qpos, j_lo, j_hi, Bc, Lk, mk, scale,
                    m, l, acc, S, alpha)
        finalize(m, l, acc, O[b, h, i0:i1], LSE[b, h, i0:i1])


@njit(parallel=True, cache=True)
def decode_kernel(Q, K, V, O, LSE, scale, q_offset, mk, sink, Bc, per, loops):
    """Q [B, Hq, 1, D], K/V [B, Hkv, Lk, D] -> O [B, Hq, 1, D], LSE [B, Hq, 1] (split-KV,
    ``per`` KV tiles per chunk: see ``api.decode_split``); mk the Mask, sink [Hq]; ``loops``:
    (for S, for P~V), each [g, Bc] tile product as plain loops or BLAS (``smallmm.py``)."""
    B, Hq, _, D = Q.shape
    Hkv, Lk = K.shape[1], K.shape[2]
    g = Hq // Hkv
    # every row of a decode group sits at the same position: one list of tiles for all (the
    # sink tiles, then the main run), cut into C chunks of `per` tiles each
    j_sink, j_lo, j_hi = visible_tiles(np.full(1, q_offset), Lk, Bc, mk)
    n_tiles = max(j_sink + j_hi - j_lo, 1)
    C = cdiv(n_tiles, per)
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
        # the heads' sink logits enter once: in chunk 0's initial state
        sink_c = np.full(g, np.float32(NEG_INF))
        if c == 0:
            sink_c[:] = sink[h0:h0 + g]
        init_state(m, l, acc, sink_c)
        # chunk c is the tiles [t0, t1) of the list; list entry t < j_sink is sink tile t,
        # the others are main tiles from j_lo on
        t0 = c * per
        t1 = min(t0 + per, n_tiles)
        S = np.empty(2 * g * Bc, np.float32)
        alpha = np.empty(g, np.float32)
        attend_span(Qg, K[b, hk], V[b, hk], qpos, min(t0, j_sink), min(t1, j_sink), Bc, Lk,
                    mk, scale, m, l, acc, S, alpha, loops)
        attend_span(Qg, K[b, hk], V[b, hk], qpos, j_lo + max(t0 - j_sink, 0),
                    min(j_lo + max(t1 - j_sink, 0), j_hi), Bc, Lk, mk, scale, m, l, acc,
                    S, alpha, loops)
    for bh in prange(B * Hkv):
        b, hk = divmod(np.int64(bh), Hkv)
        m, l, acc = m_part[b, hk, 0], l_part[b, hk, 0], acc_part[b, hk, 0]
        for c in range(1, C):
            merge_state(m, l, acc, m_part[b, hk, c], l_part[b, hk, c], acc_part[b, hk, c])
        h0 = hk * g
        finalize(m, l, acc, O[b, h0:h0 + g, 0], LSE[b, h0:h0 + g, 0])
