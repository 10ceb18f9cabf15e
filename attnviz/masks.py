"""Who sees whom, in plain NumPy: the visibility matrix and the tile classes.

``visible_mask`` is written independently of the kernels (broadcast comparisons, no spans), so
tests can check the kernels' tile classes and outputs against it. ``tile_status`` asks the very
function the kernels use to decide what to skip (``kernels.tile.mask_tile_class``).

The masks (query position p = q_offset + r): causal, key <= p, or with ``prefix`` P key <=
max(p, P - 1); ``window`` W: also key >= p - W + 1, except the first ``sinks`` keys; packed
documents (``doc_ids``, one non-decreasing id per key): same document as p, and p outside
[0, Lk) sees nothing. A position before 0 sees nothing under any causal mask.
"""
from __future__ import annotations

import numpy as np

from kernels.tile import FULL, PARTIAL, SKIPPED, cdiv, mask_tile_class
from kernels.validate import MaskSpec

TILE_NAMES = {SKIPPED: "skipped", FULL: "full", PARTIAL: "partial"}


def visible_mask(Lq: int, Lk: int, *, causal: bool, q_offset: int, window: int = 0,
                 sinks: int = 0, prefix: int = 0, doc_ids=None) -> np.ndarray:
    """Boolean [Lq, Lk]: True where query row r (position ``q_offset + r``) sees key c."""
    pos = np.arange(Lq)[:, None] + q_offset  # [Lq, 1]
    key = np.arange(Lk)[None, :]  # [1, Lk]
    if not causal:
        return np.ones((Lq, Lk), dtype=bool)
    last = np.maximum(pos, (prefix or 0) - 1)  # the last visible key (prefix-LM: P - 1 at least)
    vis = (key <= last) & (pos >= 0)
    if window:
        vis &= (key >= pos - window + 1) | (key < (sinks or 0))
    if doc_ids is not None:
        ids = np.asarray(doc_ids)
        own = ids[np.clip(pos, 0, Lk - 1)]  # [Lq, 1] the query's document
        vis &= (pos >= 0) & (pos < Lk) & (ids[None, :] == own)
    return vis


def row_spans(Lq: int, Lk: int, *, causal: bool, q_offset: int | None = None,
              window: int | None = 0) -> tuple[np.ndarray, np.ndarray]:  # plain masks
    """Visible key span [lo, hi) of every query row, as two int64 arrays [Lq] (the spans the
    kernels' ``row_span`` gives, computed for all rows at once without a dense mask).

    Row r sits at position p = q_offset + r (default ``Lk - Lq``). causal: keys <= p;
    window W: keys >= p - W + 1. An empty span (hi == lo) is a row that sees no key.
    """
    if not causal:
        return np.zeros(Lq, np.int64), np.full(Lq, Lk, np.int64)
    if q_offset is None:
        q_offset = Lk - Lq
    p = np.arange(Lq, dtype=np.int64) + q_offset  # [Lq]
    hi = np.clip(p + 1, 0, Lk)
    lo = np.clip(p - window + 1, 0, Lk) if window else np.zeros(Lq, np.int64)
    return np.minimum(lo, hi), hi


def visible_pairs(Lq: int, Lk: int, *, causal: bool, q_offset: int | None = None,
                  window: int | None = 0, sinks: int | None = 0, prefix: int | None = 0,
                  doc_ids=None) -> int:
    """Number of (query, key) pairs the mask lets through, for one head: the work of exact
    attention is 4 D FLOPs per pair (QK^T and PV, a multiply-add counted as 2)."""
    if not (sinks or prefix or doc_ids is not None):
        lo, hi = row_spans(Lq, Lk, causal=causal, q_offset=q_offset, window=window)
        return int((hi - lo).sum())
    if q_offset is None:
        q_offset = Lk - Lq
    p = np.arange(Lq, dtype=np.int64) + q_offset  # [Lq] positions
    last = np.where(p >= 0, np.maximum(p, (prefix or 0) - 1), p)
    hi = np.clip(last + 1, 0, Lk)  # keys [0, hi) pass the causal (prefix-LM) rule
    lo = np.clip(p - window + 1, 0, Lk) if window else np.zeros(Lq, np.int64)
    lo = np.minimum(lo, hi)
    n = hi - lo
    if window and sinks:  # sink keys [0, min(S, hi)) below the window add to it
        n += np.clip(np.minimum(sinks, hi), 0, lo)
    if doc_ids is not None:  # keys of the query's own document, within [lo, hi)
        ids = np.asarray(doc_ids)
        start = np.searchsorted(ids, ids, side="left")  # [Lk] first key of each key's document
        inside = (p >= 0) & (p < Lk)
        first = np.maximum(lo, start[np.clip(p, 0, Lk - 1)])
        n = np.where(inside, np.maximum(hi - first, 0), 0)
    return int(n.sum())


def packed_doc_ids(Lk: int, docs: int) -> np.ndarray:
    """doc_ids for ``docs`` packed documents of (nearly) equal length over Lk keys: [Lk] int64."""
    return np.arange(Lk, dtype=np.int64) * min(docs, Lk) // Lk


def tile_status(Lq: int, Lk: int, Br: int, Bc: int, *, causal: bool, q_offset: int,
                window: int = 0, sinks: int = 0, prefix: int = 0, doc_ids=None) -> np.ndarray:
    """[Tr, Tc] array of "skipped" / "full" / "partial" for Q blocks of Br and KV blocks of Bc."""
    Tr, Tc = cdiv(Lq, Br), cdiv(Lk, Bc)
    docs = None if doc_ids is None else tuple(int(x) for x in doc_ids)
    mk = MaskSpec(causal, q_offset, window or 0, sinks or 0, prefix or 0, docs).geometry()
    status = np.empty((Tr, Tc), dtype=object)
    for i in range(Tr):
        qpos = np.arange(i * Br, min((i + 1) * Br, Lq), dtype=np.int64) + q_offset
        for j in range(Tc):
            cls = mask_tile_class(qpos, j * Bc, min((j + 1) * Bc, Lk), Lk, mk)
            status[i, j] = TILE_NAMES[cls]
    return status.astype(str)
