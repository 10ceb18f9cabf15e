"""Who sees whom, in plain NumPy: the visibility matrix and the tile classes.

``visible_mask`` is written independently of the kernels (broadcast comparisons, no spans), so
tests can check the kernels' tile classes and outputs against it. ``tile_status`` asks the very
function the kernels use to decide what to skip (``kernels.tile.tile_class``).
"""
from __future__ import annotations

import numpy as np

from kernels.tile import FULL, PARTIAL, SKIPPED, cdiv, tile_class

TILE_NAMES = {SKIPPED: "skipped", FULL: "full", PARTIAL: "partial"}


def visible_mask(Lq: int, Lk: int, *, causal: bool, q_offset: int, window: int = 0) -> np.ndarray:
    """Boolean [Lq, Lk]: True where query row r (position ``q_offset + r``) sees key c."""
    pos = np.arange(Lq)[:, None] + q_offset  # [Lq, 1]
    key = np.arange(Lk)[None, :]  # [1, Lk]
    if not causal:
        return np.ones((Lq, Lk), dtype=bool)
    vis = key <= pos
    if window:
        vis &= key >= pos - window + 1
    return vis


def row_spans(Lq: int, Lk: int, *, causal: bool, q_offset: int | None = None,
              window: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
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
                  window: int | None = 0) -> int:
    """Number of (query, key) pairs the mask lets through, for one head: the work of exact
    attention is 4 D FLOPs per pair (QK^T and PV, a multiply-add counted as 2)."""
    lo, hi = row_spans(Lq, Lk, causal=causal, q_offset=q_offset, window=window)
    return int((hi - lo).sum())


def tile_status(Lq: int, Lk: int, Br: int, Bc: int, *, causal: bool, q_offset: int,
                window: int = 0) -> np.ndarray:
    """[Tr, Tc] array of "skipped" / "full" / "partial" for Q blocks of Br and KV blocks of Bc."""
    Tr, Tc = cdiv(Lq, Br), cdiv(Lk, Bc)
    status = np.empty((Tr, Tc), dtype=object)
    for i in range(Tr):
        qpos = np.arange(i * Br, min((i + 1) * Br, Lq), dtype=np.int64) + q_offset
        for j in range(Tc):
            cls = tile_class(qpos, j * Bc, min((j + 1) * Bc, Lk), Lk, causal, window)
            status[i, j] = TILE_NAMES[cls]
    return status.astype(str)
