"""The Backward tab's figures as PNGs (``attnviz.raster``): pure functions of a
``BackwardTrace`` and a step, like ``attnviz.images`` for the forward.

* ``tile_map``: the [Tr, Tc] grid of the current head, tiles coloured by class, those the
  backward has computed so far shaded, the current one outlined, and the visit order
  (KV block j outer: columns left to right, Q blocks down each column).
* ``step_tiles``: the step's P = exp(S - LSE) (on [0, max P]: normalized probabilities are
  small), dP = dO V^T and dS = P (dP - D), masked entries grey.
* ``accumulators``: dV_j, dK_j [keys, D] and dQ_i [rows, D] after the step.
Matrices keep row 0 on top, axes in absolute rows, keys and block indices.
"""
from __future__ import annotations

import numpy as np

from .backward_trace import BackwardTrace
from .images import CURRENT_COLOR, MASK_COLOR, Figure, tile_colors, tile_map_legend
from .raster import (
    DIVERGING,
    VIRIDIS,
    WHITE,
    Axis,
    Canvas,
    Plot,
    colorbar,
    index_ticks,
    legend,
)
from .trace import step_label

MAX_GRID_SIDE = 260.0


def tile_map(trace: BackwardTrace, n: int) -> Figure:
    """Head h of step n: its tiles by class, shaded once the backward computed them (for
    this head), step n's tile outlined, an arrow for the loop order."""
    c, s = trace.config, trace.steps[n]
    cell = min(36.0, MAX_GRID_SIDE / max(c.Tr, c.Tc))
    w, h = cell * c.Tc, cell * c.Tr
    left, top = 58, 70
    W, H = int(max(left + w + 24, 420)), int(top + h + 50)
    cv = Canvas(W, H)
    colors = np.zeros((c.Tr, c.Tc, 3), np.uint8)
    for i, j in np.ndindex(c.Tr, c.Tc):
        colors[i, j] = tile_colors(str(trace.tile_status[i, j]), False)
    for t in trace.steps[: n + 1]:
        if t.h == s.h:
            colors[t.i, t.j] = tile_colors(str(trace.tile_status[t.i, t.j]), True)
    box = (left, top, left + w, top + h)
    p = Plot(cv, box, Axis(-0.5, c.Tc - 0.5), Axis(-0.5, c.Tr - 0.5, flip=True))
    p.cells(colors)
    if cell >= 6:
        for j in range(1, c.Tc):
            cv.line([p.xy(j - 0.5, -0.5), p.xy(j - 0.5, c.Tr - 0.5)], WHITE, 1)
        for i in range(1, c.Tr):
            cv.line([p.xy(-0.5, i - 0.5), p.xy(c.Tc - 0.5, i - 0.5)], WHITE, 1)
    (x0, y0), (x1, y1) = p.xy(s.j - 0.5, s.i - 0.5), p.xy(s.j + 0.5, s.i + 0.5)
    cv.rect((x0, y0, x1, y1), outline=CURRENT_COLOR, width=3 if cell >= 12 else 2)
    p.xticks(index_ticks(0, c.Tc), title="KV block j (outer loop)")
    p.yticks(index_ticks(0, c.Tr), title="Q block i (inner)")
    entries = [e for e in tile_map_legend() if e[0] != "current (outline)"]
    entries.append(("current", "s", CURRENT_COLOR))
    legend(cv, 6, 4, entries, W - 12)
    alt = (f"backward tile map, step {step_label(n)}: head {s.h} of the group, KV block {s.j} "
           f"× Q block {s.i} outlined")
    return Figure(cv, {"tiles": p}, alt, {"current": [s.i, s.j], "head": s.h})


def _panels(cv: Canvas, top: int, ph: int, mats, x_ticks, y_ticks, x_title, y_title):
    """Heatmaps side by side: (name, x0, Z, cmap, lo, hi, title) each, with colour bars."""
    plots = {}
    for name, x0, Z, cmap, lo, hi, title in mats:
        rows, cols = Z.shape
        box = (x0, top, x0 + 130, top + ph)
        p = Plot(cv, box, Axis(x_ticks[0] - 0.5, x_ticks[0] + cols - 0.5),
                 Axis(y_ticks[0] - 0.5, y_ticks[0] + rows - 0.5, flip=True))
        p.cells(cmap.colors(Z, lo, hi, MASK_COLOR))
        cv.rect(box, outline=(160, 166, 176))
        p.xticks(index_ticks(x_ticks[0], cols, 5), title=x_title)
        p.yticks(index_ticks(y_ticks[0], rows, 8 if rows > 4 else 4),
                 title=y_title if name == mats[0][0] else "")
        p.title(title)
        colorbar(cv, (box[2] + 8, top, box[2] + 18, top + ph), cmap, lo, hi)
        plots[name] = p
    return plots


def _span(*Zs) -> float:
    vals = [np.abs(Z[np.isfinite(Z)]).max() for Z in Zs if np.isfinite(Z).any()]
    return float(max(vals)) if vals and max(vals) > 0 else 1.0


def step_tiles(trace: BackwardTrace, n: int) -> Figure:
    """P, dP and dS of step n (query rows x keys); masked entries in ``MASK_COLOR``."""
    s, c = trace.steps[n], trace.config
    (i0, i1), (k0, k1) = c.rows(s.i), c.keys(s.j)
    masked = ~np.isfinite(s.S)
    ph = 200 if i1 - i0 > 4 else 56
    top, W = 46, 700
    cv = Canvas(W, top + ph + 46)
    dP_span, dS_span = _span(s.dP), _span(np.where(masked, np.nan, s.dS))
    P = np.where(masked, np.nan, s.P)
    p_max = float(np.nanmax(P)) if np.isfinite(P).any() and np.nanmax(P) > 0 else 1.0
    mats = [("P", 56, P, VIRIDIS, 0.0, p_max, "P = exp(S − LSE)"),
            ("dP", 290, s.dP, DIVERGING, -dP_span, dP_span, "dP = dO·Vᵀ"),
            ("dS", 524, np.where(masked, np.nan, s.dS), DIVERGING, -dS_span, dS_span,
             "dS = P∘(dP − D)")]
    plots = _panels(cv, top, ph, mats, (k0,), (i0,), "key", "query row")
    legend(cv, 56, 2, [("masked (S = −∞, so P = 0 and dS = 0)", "s", MASK_COLOR)], W - 60)
    return Figure(cv, plots, f"P, dP and dS tiles, step {step_label(n)}: rows {i0}–{i1 - 1} "
                  f"× keys {k0}–{k1 - 1}, head {s.h}")


def accumulators(trace: BackwardTrace, n: int) -> Figure:
    """dV_j and dK_j ([keys, D], shared by the group) and dQ_i of head h ([rows, D]) after
    step n, each on its own symmetric scale."""
    s, c = trace.steps[n], trace.config
    i0, k0 = c.rows(s.i)[0], c.keys(s.j)[0]
    ph = 170
    top, W = 30, 700
    cv = Canvas(W, top + ph + 46)
    mats = [(name, x0, Z, DIVERGING, -_span(Z), _span(Z), title) for name, x0, Z, title in (
        ("dV", 56, s.dV, f"dV_{s.j} (keys × D)"), ("dK", 290, s.dK, f"dK_{s.j} (keys × D)"),
        ("dQ", 524, s.dQ, f"dQ_{s.i}, head {s.h} (rows × D)"))]
    plots = {}
    for name, x0, Z, cmap, lo, hi, title in mats:
        first = (k0,) if name != "dQ" else (i0,)
        plots.update(_panels(cv, top, ph, [(name, x0, Z, cmap, lo, hi, title)], (0,), first,
                             "d (head dim)", "key" if name != "dQ" else "query row"))
    return Figure(cv, plots, f"dV, dK and dQ accumulators after step {step_label(n)}")
