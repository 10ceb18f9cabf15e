"""The "why it is exact" figure as an image: one query row at one step, drawn with
``attnviz.raster`` like the step view's figures (``attnviz.images``).

The numbers come from ``attnviz.exactness`` (the row's scores as standard attention sees
them, and its accumulator before and after the step); this module only draws them. Names
follow the paper: acc the unnormalized output row, alpha = exp(m_old - m_new) the rescale
factor, P~V_j the tile's contribution, O = acc / l the finished row.
"""
from __future__ import annotations

import math

import numpy as np

from .images import CURRENT_COLOR, Figure
from .raster import AXIS, Axis, Canvas, Plot, index_ticks, legend, nice_ticks, padded_range
from .trace import step_label

SEEN_COLOR, UNSEEN_COLOR, MASKED_COLOR = "#2563eb", "#cbd5e1", "#9ca3af"
ACC_COLORS = {"acc_old": "#94a3b8", "alpha·acc_old": "#f59e0b", "P~V_j (this tile)": "#16a34a",
              "acc_new": "#2563eb", "O (streaming)": "#2563eb", "oracle (float64)": "#111827"}


def _bars(p: Plot, xs: np.ndarray, ys: np.ndarray, width: float, color) -> None:
    """Bars from 0 to ys at xs (data units wide); non-finite values are not drawn."""
    zero = p.xy(0, 0.0)[1] if p.y.lo <= 0 <= p.y.hi else p.xy(0, p.y.lo)[1]
    for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
        if not math.isfinite(y):
            continue
        x0, yv = p.xy(x - width / 2, y)
        x1, _ = p.xy(x + width / 2, y)
        top, bottom = min(zero, yv), max(zero, yv)
        p.canvas.rect((x0, top, max(x1, x0 + 0.6), max(bottom, top + 0.6)), fill=color)


def _range(*arrays: np.ndarray) -> tuple[float, float]:
    vals = np.concatenate([np.asarray(a, float).ravel() for a in arrays])
    vals = vals[np.isfinite(vals)]
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    return padded_range(min(lo, 0.0), max(hi, 0.0))


def _grouped(cv: Canvas, box, title: str, series: dict, D: int) -> Plot:
    """Grouped bars over d = 0..D-1: one bar per series at each d."""
    lo, hi = _range(*series.values())
    p = Plot(cv, box, Axis(-0.5, D - 0.5), Axis(lo, hi))
    ticks = nice_ticks(lo, hi, 5)
    p.frame(grid_y=ticks)
    if lo < 0 < hi:
        p.hline(0.0, AXIS, 1, dash=None)
    k = len(series)
    w = 0.8 / k
    d = np.arange(D)
    for s, (name, y) in enumerate(series.items()):
        _bars(p, d - 0.4 + w * (s + 0.5), np.asarray(y, float), w, ACC_COLORS[name])
    p.yticks(ticks)
    p.xticks(index_ticks(0, D, 8))
    p.title(title, size=12)
    return p


def why_figure(ex, acc) -> Figure:
    """The "why it is exact" figure of one row at one step (``attnviz.exactness``). Top: the
    row's scores as standard attention sees them (keys the loop has seen so far blue, the
    others light, masked keys as grey ticks under the axis, the global max M dashed). Then
    the accumulator's D entries: acc_old, alpha·acc_old, P~V_j, acc_new. Once the row is
    finished: O = acc / l beside the float64 oracle's row."""
    last = acc.O is not None
    Lk, D = ex.s.shape[0], acc.acc_new.shape[0]
    W, ph, gap = 560, 150, 62
    names = ["acc_old", "alpha·acc_old", "P~V_j (this tile)", "acc_new"]
    entries = [("seen by the loop so far", "s", SEEN_COLOR), ("not seen yet", "s", UNSEEN_COLOR),
               ("masked (−∞)", "s", MASKED_COLOR), ("global max M", "--", CURRENT_COLOR),
               *[(f"α·acc_old (α = {acc.alpha:.4g})" if n == "alpha·acc_old" else n, "s",
                  ACC_COLORS[n]) for n in names]]
    if last:
        entries += [("O = acc / l (streaming)", "s", ACC_COLORS["O (streaming)"]),
                    ("oracle row (float64)", "s", ACC_COLORS["oracle (float64)"])]
    legend_h = legend(Canvas(W, 1), 8, 0, entries, W - 16, draw=False)
    panels = 3 if last else 2
    top = 26
    H = int(top + panels * (ph + gap) + legend_h)
    cv = Canvas(W, H)
    # 1. the score row
    box = (58, top, W - 14, top + ph)
    seen = np.zeros(Lk, bool)
    for t in ex.tiles:
        seen[t.k0:t.k1] = True
    vis = ex.visible
    lo, hi = _range(ex.s[vis], [ex.M] if np.isfinite(ex.M) else [])
    ps = Plot(cv, box, Axis(-0.5, Lk - 0.5), Axis(lo, hi))
    ticks = nice_ticks(lo, hi, 5)
    ps.frame(grid_y=ticks)
    keys = np.arange(Lk)
    width = 1.0 if Lk > 100 else 0.8
    _bars(ps, keys[vis & ~seen], ex.s[vis & ~seen], width, UNSEEN_COLOR)
    _bars(ps, keys[vis & seen], ex.s[vis & seen], width, SEEN_COLOR)
    for k0, k1 in _runs(~vis):  # masked keys: a grey band under the axis
        x0, _ = ps.xy(k0 - 0.5, lo)
        x1, _ = ps.xy(k1 - 0.5, lo)
        cv.rect((x0, box[3] + 1, max(x1, x0 + 0.6), box[3] + 5), fill=MASKED_COLOR)
    if np.isfinite(ex.M):
        ps.hline(ex.M, CURRENT_COLOR, 1.5)
    ps.yticks(ticks, title="s")
    ps.xticks(index_ticks(0, Lk, 10))
    ps.title(f"Scores of row {ex.r} over the {Lk} keys (standard attention sees all)"
             + (f"; M = {ex.M:.4g}" if np.isfinite(ex.M) else "; no visible key"), size=12)
    # 2. the accumulator
    y0 = top + ph + gap
    with np.errstate(invalid="ignore", over="ignore"):
        series = dict(zip(names, (acc.acc_old, acc.scaled_old, acc.PV, acc.acc_new),
                          strict=True))
    pa = _grouped(cv, (58, y0, W - 14, y0 + ph),
                  f"Accumulator of row {acc.r} at step {step_label(acc.n)} "
                  f"(D = {D}): acc_new = α·acc_old + P~V_j", series, D)
    plots = {"scores": ps, "acc": pa}
    if last:  # 3. the output row beside the oracle
        y0 += ph + gap
        plots["O"] = _grouped(cv, (58, y0, W - 14, y0 + ph),
                              "O = acc / l beside the float64 oracle (the row is finished)",
                              {"O (streaming)": acc.O, "oracle (float64)": acc.O_oracle}, D)
    legend(cv, 8, top + panels * (ph + gap) - 30, entries, W - 16)
    alt = f"why it is exact: row {ex.r} at step {step_label(ex.n)}"
    return Figure(cv, plots, alt, {"last": last})


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[k0, k1) runs of True in a bool vector."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(),
                    strict=True))
