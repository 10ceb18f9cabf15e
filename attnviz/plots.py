"""Interactive charts of the timing panel (Plotly): pure functions of measured rows.

The step view and the memory chart are images (``attnviz.images``): they are on the page
from its first load and change on every step, where Plotly's 4.7 MB script and its
re-rendering cost seconds. These charts appear only after a timing run the user asked for,
where hovering over a measured point is worth the script. Nothing here imports Streamlit;
the tests read the figures' traces and shapes back.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from .memory import bytes_label  # noqa: F401  (the panels' byte labels, re-exported)

CURRENT_COLOR = "#dc2626"
_MARGIN = dict(l=60, r=20, t=50, b=50)
# The app passes figures with theme=None; this small template gives them a plain look of
# their own (a named plotly template costs ~15 ms per figure to build and 7 KB to send).
_AXIS = dict(gridcolor="#e8eaed", zerolinecolor="#d0d4da", linecolor="#d0d4da",
             automargin=True, title=dict(standoff=8))
_TEMPLATE = {"layout": dict(
    font=dict(color="#31333f"), paper_bgcolor="white", plot_bgcolor="white", xaxis=_AXIS,
    yaxis=_AXIS, hoverlabel=dict(align="left"),
    colorway=["#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"],
)}


def _grid(a: np.ndarray) -> np.ndarray:
    """Heatmap values as float32 with NaN for missing cells, which Plotly draws as gaps (as
    a NumPy array, plotly serializes it as compact base64)."""
    a = np.asarray(a, dtype=np.float32)
    return np.where(np.isfinite(a), a, np.float32(np.nan))


RSS_FLOOR = 64 * 2**10  # the RSS probe's mmap threshold: smaller arrays may reuse held memory


def measured_bytes_label(b: int) -> str:
    """A peak measured by RSS (``attnviz.rss``), never "0 B": below ``RSS_FLOOR`` RSS cannot
    see an allocation, which is not the same as there being none."""
    if b < RSS_FLOOR:
        return f"< {bytes_label(RSS_FLOOR)} (below what RSS resolves)"
    return bytes_label(b)


def length_label(L: int) -> str:
    return f"{L // 1024}K" if L >= 1024 and L % 1024 == 0 else str(L)


def _line(x, y, name: str, color: str, dash: str) -> go.Scatter:
    """A straight reference line drawn as a trace (works on log axes)."""
    return go.Scatter(x=x, y=y, mode="lines", name=name, hoverinfo="name",
                      line=dict(color=color, dash=dash, width=2))


def duration_label(s: float | None, digits: int = 3) -> str:
    """A duration in the unit that reads best: "2.08 s", "14.6 ms", "167 µs" (never
    "2.08e+03 ms"); "–" for None."""
    if s is None:
        return "–"
    if s <= 0:
        return "0 s"
    s = float(f"{s:.{digits}g}")  # round first, so 999.96 ms reads "1 s"
    for unit, k in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= k:
            return f"{s / k:.{digits}g} {unit}"
    return f"{s * 1e9:.{digits}g} ns"


def log_ticks(lo: float, hi: float, least: int = 3) -> list[float]:
    """Tick values for a log axis over [lo, hi]: 1-2-5 per decade, or every mantissa 1..9
    when that gives fewer than ``least`` inside, or evenly spaced round values when even
    that does (a range within one decade: 0.42-0.71 ms)."""
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas in ((1, 2, 5), range(1, 10)):
        ticks = [f * 10.0**e for e in decades for f in mantissas if lo <= f * 10.0**e <= hi]
        if len(ticks) >= least:
            return ticks
    step = 10.0 ** math.floor(math.log10((hi - lo) / least)) if hi > lo else lo / 10
    for f in (5, 2, 1):
        if (hi - lo) / (f * step) >= least - 1:
            step *= f
            break
    first = math.ceil(lo / step) * step
    return [float(f"{first + k * step:.6g}") for k in range(int((hi - first) / step) + 1)]


# why standard did not run at a point of the L sweep (timing.Refusal.kind) -> legend text
SKIP_NAMES = {"memory": "not run: its memory guard (S too big)",
              "time": "not run: over the time budget",
              "size": "not run: inputs over the memory budget"}


def _both(rows: list[dict]) -> list[dict]:
    """The sweep's points where both methods ran, in order of L."""
    return sorted((r for r in rows if r.get("standard_s") and r.get("streaming_s")),
                  key=lambda r: r["L"])


def crossover(rows: list[dict]) -> int | None:
    """The L of a measured change of winner: the smallest L from which streaming is faster at
    every measured L where both ran, provided standard was faster at the measured L just
    before it (a crossover lies between two measured points); None otherwise (including when
    streaming wins at every L measured: see ``streaming_always``)."""
    both = _both(rows)
    for k, r in enumerate(both):
        if k > 0 and all(b["streaming_s"] < b["standard_s"] for b in both[k:]):
            return r["L"] if both[k - 1]["streaming_s"] >= both[k - 1]["standard_s"] else None
    return None


def streaming_always(rows: list[dict]) -> bool:
    """Streaming faster at every measured L where both ran (no crossover inside the sweep)."""
    both = _both(rows)
    return bool(both) and all(b["streaming_s"] < b["standard_s"] for b in both)


def crossover_label(rows: list[dict]) -> str | None:
    """The legend's words for who wins where, claiming a crossover only between two measured
    points where the winner changes."""
    both = _both(rows)
    x = crossover(rows)
    if x is not None:
        before = max(r["L"] for r in both if r["L"] < x)
        # short: a half-width chart's horizontal legend cuts a long entry off
        return f"crossover {length_label(before)}–{length_label(x)}: streaming faster from L = {x}"
    if streaming_always(rows):
        return f"streaming faster at every L measured (from {both[0]['L']})"
    return None


def crossover_chart(rows: list[dict]) -> go.Figure:
    """Median time of standard vs streaming over L (log-log); the L where standard was refused
    marked (at streaming's time); a measured crossover (``crossover``) as a vertical line, or
    a legend entry when streaming wins at every L measured."""
    fig = go.Figure()
    times = [r[k] for r in rows for k in ("standard_s", "streaming_s") if r.get(k)]
    for key, name, color in (("standard_s", "standard (materializes S)", "#ea580c"),
                             ("streaming_s", "streaming (tiles)", "#2563eb")):
        pts = [r for r in rows if r.get(key)]
        fig.add_trace(go.Scatter(
            name=name, x=[r["L"] for r in pts], y=[r[key] for r in pts], mode="lines+markers",
            line=dict(color=color), customdata=[r.get(key.replace("_s", "_gflops")) for r in pts],
            hovertemplate="L = %{x}<br>%{y:.4g} s<br>%{customdata:.3g} GFLOP/s<extra></extra>"))
    for kind, name in SKIP_NAMES.items():
        refused = sorted((r for r in rows if r.get("standard_skipped") and r.get("streaming_s")
                          and r.get("standard_skip_kind", "memory") == kind),
                         key=lambda r: r["L"])
        if refused:
            fig.add_trace(go.Scatter(
                name=f"standard {name}", x=[r["L"] for r in refused],
                y=[r["streaming_s"] for r in refused], mode="markers",
                marker=dict(symbol="x", size=12, color="#ea580c"),
                customdata=[r["standard_skipped"] for r in refused],
                hovertemplate="L = %{x}<br>%{customdata}<extra></extra>"))
    x, label = crossover(rows), crossover_label(rows)
    if x is not None:
        fig.add_trace(_line([x, x], [min(times), max(times)], label, "#16a34a", "dash"))
    elif label:  # no line where nothing crosses: a legend entry alone
        fig.add_trace(go.Scatter(name=label, x=[None], y=[None], mode="markers",
                                 marker=dict(color="#16a34a", symbol="star", size=10),
                                 hoverinfo="skip"))
    Ls = sorted({r["L"] for r in rows})
    fig.update_xaxes(type="log", title_text="sequence length L", tickvals=Ls,
                     ticktext=[length_label(L) for L in Ls])
    if times:
        lo, hi = min(times) / 1.2, max(times) * 1.2
        ticks = log_ticks(lo, hi)
        fig.update_yaxes(tickvals=ticks, ticktext=[duration_label(t) for t in ticks],
                         range=[math.log10(lo), math.log10(hi)])
    fig.update_yaxes(type="log", title_text="median time per call")
    fig.update_layout(height=400, template=_TEMPLATE, margin=_MARGIN,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return fig


METHOD_COLORS = {"standard": "#ea580c", "streaming": "#2563eb"}
ROOF_PLOT_PX, ROOF_LABEL_PX = 300, 16  # the roofline's plot area and a label, in height
ROOF_PLOT_W_PX, ROOF_LABEL_W_PX = 300, 30  # the same in width (a half-width chart, "16K")


def _side_labels(ys: list[float], labels: list[str], gap: float
                 ) -> tuple[list[str], list[str]]:
    """Labels for points on one vertical line (log y): each goes left or right of its
    point, on the side where the last label placed is at least ``gap`` (log10) below it;
    where neither side is free it joins the label of the point just below ("1K, 4K")."""
    text, where = [""] * len(ys), ["middle left"] * len(ys)
    last = {"middle left": None, "middle right": None}  # index of the label on each side
    for k in sorted(range(len(ys)), key=lambda k: ys[k]):
        y = math.log10(ys[k])
        free = [s for s in ("middle left", "middle right")
                if last[s] is None or y - math.log10(ys[last[s]]) >= gap]
        if free:
            text[k], where[k], last[free[0]] = labels[k], free[0], k
        else:
            below = max(last.values(), key=lambda i: ys[i])
            text[below] += ", " + labels[k]
    return text, where


# where a label of a point on a rising line may go, best first: off the line's sides, then
# above, below, right, left (plotly's textposition names)
LABEL_SPOTS = ("top left", "bottom right", "top center", "bottom center", "middle right",
               "middle left")


def label_box(x: float, y: float, spot: str, label: str, xgap: float, ygap: float
              ) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1), log10 units, of a text label at ``spot`` beside the point (x, y):
    ``ygap`` high, ``xgap`` wide per three characters, clear of a marker a third of
    ``ygap`` (and of ``xgap``) across."""
    lx, ly, w = math.log10(x), math.log10(y), xgap * max(len(label), 3) / 3
    vertical, horizontal = spot.split()
    y0 = {"top": ly + ygap / 3, "middle": ly - ygap / 2, "bottom": ly - ygap / 3 - ygap}[vertical]
    side = xgap / 3 if vertical == "middle" else xgap / 6
    x0 = {"center": lx - w / 2, "right": lx + side, "left": lx - side - w}[horizontal]
    return x0, x0 + w, y0, y0 + ygap


def boxes_overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def _spread_labels(xs: list[float], ys: list[float], labels: list[str], xgap: float,
                   ygap: float) -> tuple[list[str], list[str]]:
    """Labels for points along a rising line (log x and y, in order): each at the first of
    ``LABEL_SPOTS`` where it touches no label already placed (``label_box``); where none is
    free it joins the label of the point before ("1K, 2K")."""
    text, where = [""] * len(xs), ["top center"] * len(xs)
    boxes: dict[int, tuple] = {}
    for k in range(len(xs)):
        for spot in LABEL_SPOTS:
            b = label_box(xs[k], ys[k], spot, labels[k], xgap, ygap)
            if not any(boxes_overlap(b, o) for o in boxes.values()):
                text[k], where[k], boxes[k] = labels[k], spot, b
                break
        else:
            i = max(boxes)
            text[i] += ", " + labels[k]
            boxes[i] = label_box(xs[i], ys[i], where[i], text[i], xgap, ygap)
    return text, where


def roofline_chart(points: list[dict], gemm_gflops: float, read_gbps: float) -> go.Figure:
    """Measured GFLOP/s against arithmetic intensity (FLOP/byte), log-log, under the roof
    ``min(gemm_gflops, read_gbps x intensity)`` measured in the same run; ``points``:
    {method, L, intensity, gflops} (``roofline.points``), each labelled with its L."""
    fig = go.Figure()
    xs = [p["intensity"] for p in points] or [1.0]
    ridge = gemm_gflops / read_gbps
    x0, x1 = min(min(xs), ridge) / 3, max(max(xs), ridge) * 3
    ys = [p["gflops"] for p in points] or [gemm_gflops]
    y0, y1 = min(min(ys), read_gbps * x0) / 1.5, max(max(ys), gemm_gflops) * 1.5
    gap = ROOF_LABEL_PX / ROOF_PLOT_PX * math.log10(y1 / y0)  # a label's height, in log10
    xgap = ROOF_LABEL_W_PX / ROOF_PLOT_W_PX * math.log10(x1 / x0)  # and its width
    fig.add_trace(_line([x0, ridge, x1], [read_gbps * x0, gemm_gflops, gemm_gflops],
                        f"roof: GEMM {gemm_gflops:.0f} GFLOP/s, read {read_gbps:.0f} GB/s "
                        "(this run)", "#6b7280", "solid"))
    for m, name in (("standard", "standard (materializes S)"),
                    ("streaming", "streaming (tiles)")):
        pts = sorted((p for p in points if p["method"] == m), key=lambda p: p["L"])
        if not pts:
            continue
        if m == "streaming":
            text, where = _spread_labels([p["intensity"] for p in pts],
                                         [p["gflops"] for p in pts],
                                         [length_label(p["L"]) for p in pts], xgap, gap)
        else:  # standard's points share one intensity (the model's passes over S)
            text, where = _side_labels([p["gflops"] for p in pts],
                                       [length_label(p["L"]) for p in pts], gap)
        fig.add_trace(go.Scatter(
            name=name, x=[p["intensity"] for p in pts], y=[p["gflops"] for p in pts],
            mode="lines+markers+text", text=text, textposition=where,
            line=dict(color=METHOD_COLORS[m], width=1, dash="dot"),
            marker=dict(size=9, color=METHOD_COLORS[m]),
            customdata=[[p["L"], 100 * p["gflops"] / min(gemm_gflops, read_gbps * p["intensity"])]
                        for p in pts],
            hovertemplate="L = %{customdata[0]}<br>%{x:.3g} FLOP/byte<br>%{y:.3g} GFLOP/s "
                          "(%{customdata[1]:.0f}% of the roof)<extra></extra>"))
    for axis, lo, hi in ((fig.update_xaxes, x0, x1), (fig.update_yaxes, y0, y1)):
        ticks = log_ticks(lo, hi)
        axis(type="log", range=[math.log10(lo), math.log10(hi)], tickvals=ticks,
             ticktext=[f"{t:g}" for t in ticks])
    fig.update_xaxes(title_text="arithmetic intensity (FLOP per byte moved, model)")
    fig.update_yaxes(title_text="measured GFLOP/s")
    fig.update_layout(height=400, template=_TEMPLATE, margin=_MARGIN,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return fig


MARK_STYLES = {"kernel default": dict(color="#f97316", dash="dash"),
               "sidebar (stepper)": dict(color="#e879f9", dash="dot")}


def block_sweep_chart(Brs: list[int], Bcs: list[int], gflops: np.ndarray,
                      marks: dict[str, tuple[int, int]] | None = None) -> go.Figure:
    """GFLOP/s of the streaming kernel over (Q block, KV block); NaN = not measured; the
    best cell outlined, and each of ``marks`` (name -> (Br, Bc), ``MARK_STYLES``: the
    kernel's default, the sidebar's tile) that lies on the grid, with a legend entry."""
    decode = list(Brs) == [1]
    on_grid = {name: (list(Brs).index(Br), list(Bcs).index(Bc))
               for name, (Br, Bc) in (marks or {}).items() if Br in Brs and Bc in Bcs}
    text = [[("" if not np.isfinite(g) else f"{g:.1f}") for g in row] for row in gflops]
    for name, (i, j) in on_grid.items():  # the cell says it too: no colour to decode
        text[i][j] += "<br>" + name.split()[0]
    fig = go.Figure(go.Heatmap(
        name="GFLOP/s", x=[str(b) for b in Bcs], y=[str(b) for b in Brs],
        z=_grid(gflops), colorscale="Viridis", colorbar=dict(title="GFLOP/s"), text=text,
        texttemplate="%{text}", showlegend=False,
        hovertemplate=("Bc = %{x}" if decode else "Br = %{y}, Bc = %{x}")
        + "<br>%{z:.3g} GFLOP/s<extra></extra>"))

    def outline(name, i, j, inset, **line):
        fig.add_shape(type="rect", name=name, x0=j - 0.5 + inset, x1=j + 0.5 - inset,
                      y0=i - 0.5 + inset, y1=i + 0.5 - inset, line=dict(width=3, **line),
                      showlegend=True, legendgroup=name)

    if np.isfinite(gflops).any():
        bi, bj = np.unravel_index(np.nanargmax(gflops), gflops.shape)
        outline("best", bi, bj, 0.0, color=CURRENT_COLOR)
    for k, (name, (i, j)) in enumerate(on_grid.items(), start=1):
        outline(name, i, j, 0.08 * k, **MARK_STYLES.get(name, {}))
    fig.update_xaxes(title_text="KV block Bc", type="category")
    fig.update_yaxes(title_text="" if decode else "Q block Br", type="category",
                     autorange="reversed", showticklabels=not decode)
    fig.update_layout(height=200 if decode else 360, template=_TEMPLATE, margin=_MARGIN,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return fig
