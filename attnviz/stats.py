"""The numbers the panels quote, as pure functions: work skipped, FLOPs, output error, memory.

* ``tile_work``: tile counts and how much of the Lq x Lk score matrix the skipped tiles
  never computed (by area: ragged last blocks count what they hold).
* ``visible_pairs`` / ``attention_flops``: the work of exact attention, 4 D FLOPs per
  visible (query, key) pair (2 D for Q K^T, 2 D for P V; a multiply-add counts 2).
* ``output_error``: which rows are final after step n, and their error vs the float64 oracle.
* ``memory_series``: ``attnviz.memory``'s model along a range of sequence lengths.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import memory
from .masks import visible_pairs
from .reference import attention_reference
from .trace import Trace


@dataclass(frozen=True)
class TileWork:
    full: int
    partial: int
    skipped: int
    entries: int  # Lq * Lk
    computed_entries: int  # score entries inside computed (full or partial) tiles
    visible: int  # visible (query, key) pairs

    @property
    def tiles(self) -> int:
        return self.full + self.partial + self.skipped

    @property
    def saved_fraction(self) -> float:
        """Share of the score matrix in skipped tiles: work the mask let us not do."""
        return 1.0 - self.computed_entries / self.entries

    @property
    def wasted_fraction(self) -> float:
        """Share of the computed entries that were masked anyway (inside partial tiles)."""
        return 1.0 - self.visible / self.computed_entries if self.computed_entries else 0.0


def attention_flops(pairs: int, D: int, B: int = 1, H: int = 1) -> int:
    """FLOPs of exact attention: 4 D per visible pair, per head and batch entry."""
    return 4 * D * pairs * B * H


def tile_work(trace: Trace) -> TileWork:
    c = trace.config
    counts = trace.counts
    computed = sum((c.rows(s.i)[1] - c.rows(s.i)[0]) * (c.keys(s.j)[1] - c.keys(s.j)[0])
                   for s in trace.steps)
    m = trace.driver.mask if trace.driver else c.mask  # the mask the loop walked (a bug's)
    return TileWork(
        full=counts["full"], partial=counts["partial"], skipped=counts["skipped"],
        entries=c.Lq * c.Lk, computed_entries=computed,
        visible=visible_pairs(c.Lq, c.Lk, causal=m.causal, q_offset=m.q_offset,
                              window=m.window, sinks=m.sinks, prefix=m.prefix,
                              doc_ids=m.doc_ids),
    )


def finished_rows(trace: Trace, n: int) -> np.ndarray:
    """Bool [Lq]: rows whose Q block was normalized at or before step n."""
    done = np.zeros(trace.config.Lq, dtype=bool)
    for i, last in trace.block_done_after.items():
        if last <= n:
            i0, i1 = trace.config.rows(i)
            done[i0:i1] = True
    return done


def output_error(trace: Trace, O_ref: np.ndarray, lse_ref: np.ndarray, n: int):
    """(done [Lq] bool, err_O [Lq], err_lse [Lq]): max |O - O_ref| per row and |LSE - LSE_ref|,
    NaN for rows not finished at step n. Rows that see no key have LSE = -inf on both sides
    (error 0)."""
    done = finished_rows(trace, n)
    err_o = np.full(trace.config.Lq, np.nan)
    err_l = np.full(trace.config.Lq, np.nan)
    err_o[done] = np.abs(trace.out[done] - O_ref[done]).max(axis=1)
    lse, ref = trace.lse[done], lse_ref[done]
    same = lse == ref  # covers -inf == -inf
    with np.errstate(invalid="ignore"):  # -inf - -inf, discarded by `same`
        err_l[done] = np.where(same, 0.0, np.abs(lse - ref))
    return done, err_o, err_l


def oracle(trace: Trace, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The float64 oracle's (O [Lq, D], LSE [Lq]) for the traced head, ``chunk`` query rows
    at a time, so its score matrix never exceeds chunk x Lk."""
    c, m = trace.config, trace.config.mask
    O = np.empty((c.Lq, c.D))
    lse = np.empty(c.Lq)
    for a in range(0, c.Lq, chunk):
        b = min(a + chunk, c.Lq)
        kw = {**m.keywords(), "q_offset": m.q_offset + a if m.causal else None}
        O[a:b], lse[a:b] = attention_reference(trace.q[a:b], trace.k, trace.v, **kw,
                                               scale=c.scale)
    return O, lse


def memory_series(shape_at, Ls, Br: int, Bc: int, threads: int,
                  chunks_at=lambda L: 1) -> dict[str, list[int]]:
    """Bytes of each method along ``Ls``; ``shape_at(L) -> memory.Shape``, ``chunks_at(L)``:
    the decode path's chunks per KV head there (its partial states; Lq == 1 only)."""
    series = {"standard (S/P matrix)": [], "NumPy textbook (S, P, temp)": [],
              "streaming (tiles + output)": [], "K/V cache (inputs)": [],
              "GQA K/V copy (repeat_kv)": []}
    for L in Ls:
        s = shape_at(L)
        series["standard (S/P matrix)"].append(memory.scores_bytes(s))
        series["NumPy textbook (S, P, temp)"].append(memory.numpy_standard_bytes(s))
        series["streaming (tiles + output)"].append(memory.streaming_bytes(s, Br, Bc, threads,
                                                                             chunks_at(L)))
        series["K/V cache (inputs)"].append(memory.kv_bytes(s))
        series["GQA K/V copy (repeat_kv)"].append(memory.gqa_copy_bytes(s))
    return series
