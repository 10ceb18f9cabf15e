"""The step view's figures as images: pure functions of a Trace.

Each builder returns a ``Figure``: a PNG drawn on the server with ``attnviz.raster``, plus the
data-to-pixel maps of its plots (``fig.plots[name].pixel(x, y)``), so tests read a figure
back by its pixels and the tile map's click handler maps a click to a tile. Nothing here
imports Streamlit. Names follow the paper: Q block i (rows), KV block j (keys), S the scaled
masked scores, P~ = exp(S - m'), m the running max, l the running denominator, alpha the
rescale factor.

Why images: these figures change on every step click. Drawn here they cost a few ms of
server time and an ``<img>`` swap in the browser, where Plotly needed ~1 s per click and a
4.7 MB script on the first load. Exact values stay readable in the app's tables.

Conventions the app and tests rely on:
* matrices keep row 0 on top; axes are labelled with absolute row, key and block indices;
* ``tile_map``: plot ``"tiles"`` has one cell per tile at data (j, i); ``meta["grid"]`` is
  the grid's box as fractions of the image (the click target), ``meta["current"]`` the
  outlined tile (i, j);
* masked scores are ``MASK_COLOR`` in both S and P~; rows not finished yet are
  ``PENDING_COLOR`` in the output heatmap;
* the tile map's legend (``tile_map_legend``) holds every colour a tile can take
  (``tile_colors``), visited ones included;
* a step n is written ``step_label(n)`` (1-based: "step 36" is the last of 36), also in the
  text alternatives; ``Trace.steps`` and the URL stay 0-based.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field

import numpy as np

from .raster import (
    DIVERGING,
    MUTED,
    VIRIDIS,
    WHITE,
    Axis,
    Canvas,
    Plot,
    blend,
    colorbar,
    index_ticks,
    legend,
    log_ticks,
    nice_ticks,
    padded_range,
    rgb,
    tick_label,
)
from .trace import Trace, step_label

STATUS_CODE = {"skipped": 0, "full": 1, "partial": 2}
STATUS_COLOR = {"skipped": "#e5e7eb", "full": "#3b82f6", "partial": "#f59e0b"}
VISITED_SHADE, VISITED_ALPHA = "#0f172a", 0.45
CURRENT_COLOR = "#dc2626"
RESCALE_COLOR = "#dc2626"
MASK_COLOR = "#9aa0a8"  # darker than the diverging scale's white zero: never mistaken for S = 0
PENDING_COLOR = "#eceef1"
M_COLOR, L_COLOR, ERR_COLOR, ROWS_COLOR = "#2563eb", "#16a34a", "#7c3aed", "#b4bcc8"
EXACT_COLOR = "#0d9488"  # rows whose error is exactly 0, on the error chart's floor
SHORT_TILE_PX = 96  # height of a step tile of <= 4 query rows (decode's single row)
COLORWAY = ["#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"]


@dataclass
class Figure:
    """A drawn figure: its canvas, its plots by name, a text alternative (it names the
    step, so the browser tests see which step an image shows), facts for clicks and tests."""
    canvas: Canvas
    plots: dict[str, Plot]
    alt: str
    meta: dict = field(default_factory=dict)

    @property
    def width(self) -> int:  # logical pixels
        return self.canvas.width

    def png(self) -> bytes:
        return self.canvas.png()

    def data_url(self) -> str:
        """The PNG as a ``data:`` URL: Streamlit shows it as given (bytes it would decode,
        resize to the display width and re-encode as JPEG: slower, blurred on HiDPI)."""
        return "data:image/png;base64," + base64.b64encode(self.png()).decode()

    def array(self) -> np.ndarray:
        """[H, W, 3] uint8 device pixels."""
        return np.asarray(self.canvas.image)

    def titled_png(self, title: str, subtitle: str = "") -> bytes:
        """The figure under a title band, as PNG bytes (for export: a slide needs context)."""
        band = 58 if subtitle else 40
        probe = self.canvas
        width = max(probe.width, int(max(probe.text_width(title, 16),
                                         probe.text_width(subtitle, 11))) + 28)
        out = Canvas(width, self.canvas.height + band, self.canvas.scale)
        out.text((14, 12), title, size=16)
        if subtitle:
            out.text((14, 36), subtitle, size=11, color=MUTED)
        out.image.paste(self.canvas.image, (0, band * self.canvas.scale))
        return out.png()


def tile_colors(status: str, visited: bool) -> tuple[int, int, int]:
    """The colour of a tile of class ``status``: its class colour, darkened once visited.
    The tile map's legend shows every colour this gives (a skipped tile is never visited)."""
    if visited:
        return blend(STATUS_COLOR[status], VISITED_SHADE, VISITED_ALPHA)
    return rgb(STATUS_COLOR[status])


def tile_status_colors(trace: Trace, n: int) -> np.ndarray:
    """[Tr, Tc, 3]: each tile's class colour, darkened where visited up to step n."""
    status = trace.tile_status
    out = np.zeros((*status.shape, 3), np.uint8)
    for name in STATUS_COLOR:
        out[status == name] = tile_colors(name, False)
    for s in trace.steps[: n + 1]:
        out[s.i, s.j] = tile_colors(status[s.i, s.j], True)
    return out


def tile_map_legend() -> list[tuple[str, str, tuple[int, int, int]]]:
    """(label, "s", colour) of every colour a tile can have, and the current tile's outline."""
    return [("skipped", "s", tile_colors("skipped", False)),
            ("full", "s", tile_colors("full", False)),
            ("partial", "s", tile_colors("partial", False)),
            ("full, visited", "s", tile_colors("full", True)),
            ("partial, visited", "s", tile_colors("partial", True)),
            ("current (outline)", "s", rgb(CURRENT_COLOR))]


# The tile map's grid: square cells of at most 40 px, the grid at most 300 px a side, but at
# least MIN_GRID_W x MIN_GRID_H px (cells then stretch), so that a grid of 1 x 128 or 128 x 1
# tiles stays visible and clickable.
MAX_CELL, MAX_GRID_SIDE, MIN_GRID_W, MIN_GRID_H = 40.0, 300.0, 160.0, 28.0


def tile_map(trace: Trace, n: int) -> Figure:
    """The [Tr, Tc] grid coloured by tile class, tiles visited up to step n shaded, step n's
    tile outlined; square cells unless the grid would be thinner than its minimum size."""
    c = trace.config
    cell = min(MAX_CELL, MAX_GRID_SIDE / max(c.Tr, c.Tc))
    cw, ch = max(cell, MIN_GRID_W / c.Tc), max(cell, MIN_GRID_H / c.Tr)
    w, h = cw * c.Tc, ch * c.Tr
    probe = Canvas(1, 1)
    # the y-axis title runs along the grid only where it fits; on a short grid (decode, a
    # few Q blocks) it stands horizontally left of the ticks, never into the legend above
    y_ticks = index_ticks(0, c.Tr)
    tick_w = max(probe.text_width(tick_label(v), 11) for v in y_ticks)
    y_title = next((t for t in ("Q block i (query rows)", "Q block i")
                    if probe.text_width(t, 12) + 12 <= h), None)
    flat = "Q block i"
    left = 58 if y_title else 14 + probe.text_width(flat, 12) + 8 + tick_w + 10
    right, bottom = 14, 46
    W = int(max(left + w + right, 340))
    entries = tile_map_legend()
    top = 12 + legend(probe, 6, 4, entries, W - 12, draw=False)
    H = int(top + h + bottom)
    cv = Canvas(W, H)
    box = (left, top, left + w, top + h)
    p = Plot(cv, box, Axis(-0.5, c.Tc - 0.5), Axis(-0.5, c.Tr - 0.5, flip=True))
    p.cells(tile_status_colors(trace, n))
    if cw >= 6:  # white borders while cells are big enough to keep them
        for j in range(1, c.Tc):
            cv.line([p.xy(j - 0.5, -0.5), p.xy(j - 0.5, c.Tr - 0.5)], WHITE, 1)
    if ch >= 6:
        for i in range(1, c.Tr):
            cv.line([p.xy(-0.5, i - 0.5), p.xy(c.Tc - 0.5, i - 0.5)], WHITE, 1)
    cur = trace.steps[n]
    (x0, y0), (x1, y1) = p.xy(cur.j - 0.5, cur.i - 0.5), p.xy(cur.j + 0.5, cur.i + 0.5)
    cv.rect((x0, y0, x1, y1), outline=CURRENT_COLOR, width=3 if min(cw, ch) >= 12 else 2)
    p.xticks(index_ticks(0, c.Tc), title="KV block j (keys)")
    p.yticks(y_ticks, title=y_title or "")
    if not y_title:
        cv.text((left - tick_w - 14, top + h / 2), flat, size=12, anchor="rm")
    legend(cv, 6, 4, entries, W - 12)
    return Figure(cv, {"tiles": p}, f"tile map, step {step_label(n)}: Q block {cur.i} × "
                  f"KV block {cur.j} outlined", {
        "grid": [box[0] / W, box[1] / H, box[2] / W, box[3] / H], "current": [cur.i, cur.j],
        "y_title": y_title or flat})


def _matrix_axes(p: Plot, i0: int, i1: int, k0: int, k1: int, *, y_title: bool) -> None:
    p.xticks(index_ticks(k0, k1 - k0, 5), title="key")
    p.yticks(index_ticks(i0, i1 - i0, 8 if i1 - i0 > 4 else 4),
             title="query row" if y_title else "")


def step_tiles(trace: Trace, n: int) -> Figure:
    """Step n's S tile and its P~ tile side by side, masked entries in ``MASK_COLOR``, each
    with its colour bar; axes in absolute query rows and keys."""
    s = trace.steps[n]
    c = trace.config
    S, P = trace.tiles(n)
    (i0, i1), (k0, k1) = c.rows(s.i), c.keys(s.j)
    masked = ~np.isfinite(S)
    finite = S[~masked]
    span = float(np.abs(finite).max()) if finite.size else 1.0
    span = span or 1.0
    # a block of a few rows (decode: one) still gets a readable height, and its colour bars
    # fewer ticks: 3 on a short bar, not 5 crammed into 56 px
    short = i1 - i0 <= 4
    ph = SHORT_TILE_PX if short else 220
    top, W = 50, 440
    cv = Canvas(W, top + ph + 46)
    panels, ticks = {}, {}
    for name, x0, Z, cmap, lo, hi, title in (
            ("S", 52, S, DIVERGING, -span, span, "S = Q·Kᵀ/√D"),
            ("P~", 264, np.where(masked, np.nan, P), VIRIDIS, 0.0, 1.0, "P~ = exp(S − m new)")):
        box = (x0, top, x0 + 130, top + ph)
        p = Plot(cv, box, Axis(k0 - 0.5, k1 - 0.5), Axis(i0 - 0.5, i1 - 0.5, flip=True))
        p.cells(cmap.colors(Z, lo, hi, MASK_COLOR))
        cv.rect(box, outline=(160, 166, 176))
        _matrix_axes(p, i0, i1, k0, k1, y_title=name == "S")
        p.title(title)
        ticks[name] = _bar_ticks(name, lo, hi, short)
        colorbar(cv, (box[2] + 8, top, box[2] + 18, top + ph), cmap, lo, hi, ticks[name])
        panels[name] = p
    legend(cv, 52, 2, [("masked (S = −∞, so P~ = 0)", "s", MASK_COLOR)], W - 60)
    return Figure(cv, panels, f"S and P~ tiles, step {step_label(n)}: rows {i0}–{i1 - 1} × keys "
                  f"{k0}–{k1 - 1}", {"span": span, "bar_ticks": ticks, "tile_px": ph})


def _bar_ticks(name: str, lo: float, hi: float, short: bool) -> list[float]:
    """A step tile's colour bar ticks: about 5, or 3 on a short (few-row) bar (S's scale is
    symmetric, [-span, span]: then -a, 0, a with a the roundest 1, 2, 5 x 10^k <= span)."""
    if name == "P~":
        return [0, 0.5, 1] if short else [0, 0.25, 0.5, 0.75, 1]
    if not short:
        return nice_ticks(lo, hi, 5)
    e = 10.0 ** math.floor(math.log10(hi))
    a = max(b * e for b in (1, 2, 5) if b * e <= hi)
    return [-a, 0.0, a]


def row_history(trace: Trace, n: int, r: int, *, all_rows: bool = False) -> Figure:
    """m (left axis) and l (right axis) of query row r after each step of its Q block up to
    step n; rescale events (alpha ≠ 1 with state to rescale) as red triangles; step n's KV
    block as a dashed line. ``all_rows``: m of every row of the block too (thin grey).
    The legend says "alpha < 1" for the correct loop; a bug's loop may let m fall (alpha > 1),
    so under a bug it says "alpha ≠ 1"."""
    c = trace.config
    i0, _ = c.rows(r // c.Br)
    t = r - i0
    steps = trace.row_history(r)
    upto = [s for s in steps if s.n <= n]
    js = [s.j for s in upto]
    m = [float(s.m[t]) for s in upto]
    ls = [float(s.l[t]) for s in upto]
    resc = [s for s in upto if s.alpha[t] != 1.0 and np.isfinite(s.m_before[t])]
    M = np.stack([s.m for s in upto], axis=1) if all_rows and upto else np.empty((0, 0))
    mvals = np.array([*m, *M.ravel()], float)
    mvals = mvals[np.isfinite(mvals)]
    m_lo, m_hi = padded_range(*(mvals.min(), mvals.max()) if mvals.size
                              else (math.nan, math.nan))
    l_hi = max([v for v in ls if math.isfinite(v)] + [0.0]) * 1.1 or 1.0
    all_js = [s.j for s in steps]
    x_axis = Axis(min(all_js) - 0.5, max(all_js) + 0.5)
    entries = [(f"m (row {r})", "-", M_COLOR), (f"l (row {r})", "--", L_COLOR),
               ("rescale (alpha ≠ 1)" if trace.bug else "rescale (alpha < 1)", "^",
                RESCALE_COLOR),
               (f"step {step_label(n)} (KV block {trace.steps[n].j})", "--", CURRENT_COLOR)]
    if all_rows:
        entries.append((f"m of rows {i0}–{i0 + M.shape[0] - 1}", "-", ROWS_COLOR))
    W = 400
    legend_h = legend(Canvas(W, 1), 8, 0, entries, W - 16, draw=False)
    H = int(12 + 210 + 48 + legend_h + 6)
    box = (62, 12, W - 62, 222)
    cv = Canvas(W, H)
    pm = Plot(cv, box, x_axis, Axis(m_lo, m_hi))
    pl = Plot(cv, box, x_axis, Axis(0.0, l_hi))
    m_ticks = nice_ticks(m_lo, m_hi, 6)
    pm.frame(grid_y=m_ticks)
    pm.vline(trace.steps[n].j, CURRENT_COLOR, 1.5)
    for row in M:
        pm.line(js, row.tolist(), ROWS_COLOR, 1)
    pl.line(js, ls, L_COLOR, 2.5, dash=(3, 3))
    pl.markers(js, ls, "o", 6, L_COLOR)
    pm.line(js, m, M_COLOR, 3)
    pm.markers(js, m, "o", 7, M_COLOR)
    pm.markers([s.j for s in resc], [float(s.m[t]) for s in resc], "^", 14, RESCALE_COLOR)
    pm.xticks(index_ticks(min(all_js), len(all_js), 10), title="KV block j")
    pm.yticks(m_ticks, title="running max m", color=M_COLOR)
    pl.yticks(nice_ticks(0.0, l_hi, 6), title="running denominator l", right=True,
              color=L_COLOR)
    legend(cv, 8, 222 + 48, entries, W - 16)
    alt = f"row history of query row {r} up to step {step_label(n)}"
    return Figure(cv, {"m": pm, "l": pl}, alt, {
        "j": js, "m": m, "l": ls, "all_rows": M.shape[0], "legend": [e[0] for e in entries],
        "rescale": [(s.j, float(s.alpha[t]), s.n) for s in resc]})


def output_rows(trace: Trace, n: int, done: np.ndarray, err_o: np.ndarray,
                max_rows: int = 256) -> Figure:
    """Left: O for the rows finished by step n (others ``PENDING_COLOR``); right: each
    finished row's max |O - O_oracle| on a log axis. More than ``max_rows`` rows: the
    heatmap shows every k-th row."""
    c = trace.config
    stride = max(1, math.ceil(c.Lq / max_rows))
    rows = np.arange(0, c.Lq, stride)
    O = np.where(done[:, None], trace.out, np.nan)[rows]
    r_done = np.flatnonzero(done)
    span = float(np.abs(O[np.isfinite(O)]).max()) if np.isfinite(O).any() else 1.0
    span = span or 1.0
    W, H, top, ph = 820, 300, 44, 200
    cv = Canvas(W, H)
    box = (62, top, 330, top + ph)
    po = Plot(cv, box, Axis(-0.5, c.D - 0.5), Axis(-0.5, len(rows) * stride - 0.5, flip=True))
    po.cells(DIVERGING.colors(O, -span, span, PENDING_COLOR))
    cv.rect(box, outline=(160, 166, 176))
    po.xticks(index_ticks(0, c.D, 8), title="d (head dim)")
    po.yticks(index_ticks(0, c.Lq, 8), title="query row")
    nth = {2: "2nd", 3: "3rd"}.get(stride, f"{stride}th")
    every = f" (every {nth} row)" if stride > 1 else ""
    po.title("O rows finished so far" + every)
    colorbar(cv, (box[2] + 8, top, box[2] + 18, top + ph), DIVERGING, -span, span)
    legend(cv, 62, 2, [("not finished yet", "s", PENDING_COLOR)], 260)
    ebox = (440, top, W - 16, top + ph)
    pe, floor = _error_plot(cv, ebox, c.Lq, r_done, err_o[r_done])
    pe.title("max |O − O₆₄| per finished row (O₆₄: float64 oracle)", size=12)
    return Figure(cv, {"O": po, "error": pe}, output_rows_alt(n, int(done.sum()), c.Lq),
                  {"stride": stride, "rows_done": int(done.sum()), "exact_floor": floor})


def _error_plot(cv: Canvas, box, Lq: int, rows: np.ndarray, err: np.ndarray
                ) -> tuple[Plot, float | None]:
    """Each finished row's error on a log axis ranged to the errors (powers of ten from
    below the smallest to above the largest). An error of exactly 0 has no place on a log
    axis: such rows sit on a floor one tick step below the lowest tick, labelled "exact: 0"
    and cut off from the decades by a dashed line. Returns the plot and the floor (None when
    no row is exact)."""
    bad = ~np.isfinite(err)  # a bug lab's overflow: inf or NaN, drawn above the decades
    exact = err == 0
    pos = err[~exact & ~bad]
    lo, hi = (float(pos.min()), float(pos.max())) if pos.size else (1e-8, 1e-7)
    ticks = log_ticks(lo, hi)
    step = ticks[1] / ticks[0] if len(ticks) > 1 else 10.0
    floor = ticks[0] / step if exact.any() else None
    pad = 10 ** 0.25  # room for the markers at both ends, inside the box
    y = Axis((floor or ticks[0]) / pad, ticks[-1] * pad, log=True)
    pe = Plot(cv, box, Axis(-0.5, Lq - 0.5), y)
    pe.frame(grid_y=ticks)
    size = 4 if Lq > 64 else 6
    pe.markers(rows[~exact & ~bad].tolist(), pos.tolist(), "o", size, ERR_COLOR)
    if bad.any():
        pe.markers(rows[bad].tolist(), [ticks[-1]] * int(bad.sum()), "x", size + 2, ERR_COLOR)
        cv.text((box[2] - 4, box[1] + 4), "× on the top line: not finite (inf or NaN)",
                anchor="ra", color=ERR_COLOR, size=10)
    labels = [f"1e{round(math.log10(v))}" for v in ticks]
    if floor is not None:
        pe.hline(math.sqrt(floor * ticks[0]), MUTED, 1, dash=(3, 3))
        pe.markers(rows[exact].tolist(), [floor] * int(exact.sum()), "s", size, EXACT_COLOR)
        ticks, labels = [floor, *ticks], ["exact: 0", *labels]
    pe.xticks(index_ticks(0, Lq, 8), title="query row")
    pe.yticks(ticks, labels)
    if not err.size:
        cv.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), "no row finished yet",
                anchor="mm", color=MUTED)
    return pe, floor


def output_rows_alt(n: int, rows_done: int, Lq: int) -> str:
    """The output figure's text alternative. Its image only changes when a Q block finishes;
    the app reuses it for the steps between and names the current step here."""
    return f"output rows finished by step {step_label(n)}: {rows_done} of {Lq}"
