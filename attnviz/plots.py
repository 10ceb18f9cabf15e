"""Figure builders: pure functions from a Trace (or a config, or measured rows) to go.Figure.

Nothing here imports Streamlit or keeps state, so every figure can be tested by reading its
traces and shapes, and exported as PNG. Names follow the paper: Q block i (rows), KV block
j (keys), S the scaled masked scores, P~ = exp(S - m'), m the running max, l the running
denominator, alpha the rescale factor.

Conventions the app and tests rely on:
* ``tile_map``: trace ``"tiles"`` is the status heatmap (0 skipped, 1 full, 2 partial);
  trace ``"visited"`` shades computed tiles up to step n; trace ``"click"`` has one invisible
  square marker per tile with ``customdata = [n, i, j]`` (n = -1 for skipped tiles), the
  click target; the layout shape named ``"current"`` outlines step n's tile.
* rows go down (reversed y axes): row 0 / Q block 0 on top, as in a matrix.
"""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from .trace import Trace

STATUS_CODE = {"skipped": 0, "full": 1, "partial": 2}
STATUS_COLOR = {"skipped": "#e5e7eb", "full": "#3b82f6", "partial": "#f59e0b"}
CURRENT_COLOR = "#dc2626"
VISITED_SHADE = "rgba(15, 23, 42, 0.45)"
RESCALE_COLOR = "#dc2626"
DIVERGING = [[0, "#2166ac"], [0.5, "#f7f7f7"], [1, "#b2182b"]]  # negative blue, positive red
_MARGIN = dict(l=60, r=20, t=50, b=50)
# The app passes figures with theme=None (Streamlit's theme costs a third of the browser's
# work per step). This small template gives them a plain look of their own; a named plotly
# template would cost ~15 ms per figure to build and 7 KB each to send.
_AXIS = dict(gridcolor="#e8eaed", zerolinecolor="#d0d4da", linecolor="#d0d4da",
             automargin=True, title=dict(standoff=8))
_TEMPLATE = {"layout": dict(
    font=dict(color="#31333f"), paper_bgcolor="white", plot_bgcolor="white", xaxis=_AXIS,
    yaxis=_AXIS, hoverlabel=dict(align="left"),
    colorway=["#2563eb", "#ea580c", "#16a34a", "#7c3aed", "#0891b2", "#ca8a04", "#db2777"],
)}


def _discrete_scale(colors: list[str]) -> list:
    """A colorscale with one flat band per integer code 0..len-1 (zmin=0, zmax=len-1)."""
    n = len(colors)
    scale = []
    for k, c in enumerate(colors):
        scale += [[k / n, c], [(k + 1) / n, c]]
    return scale


def _nan_to_none(a: np.ndarray) -> list:
    """For line traces: plotly JSON lists have no inf/NaN, so those points become gaps."""
    a = np.asarray(a, dtype=np.float64)
    return np.where(np.isfinite(a), a, None).tolist()


def _grid(a: np.ndarray) -> np.ndarray:
    """Heatmap values as float32 with NaN for masked (-inf) or missing cells, which Plotly
    draws as gaps. Kept as a NumPy array, plotly serializes it as compact base64 (a 128 x 128
    tile is ~90 KB instead of ~330 KB of decimal text): step clicks stay fast."""
    a = np.asarray(a, dtype=np.float32)
    return np.where(np.isfinite(a), a, np.float32(np.nan))


def _figure(data: list[dict], layout: dict) -> go.Figure:
    """A figure from plain dicts, unvalidated: plotly's property validation (and
    ``make_subplots``) cost ~200 ms for the four step-view figures, paid on every step click.
    The dicts are written against plotly's schema; the tests read the results back."""
    return go.Figure({"data": data, "layout": {"template": _TEMPLATE, **layout}},
                     _validate=False)


def _integer_ticks(n: int) -> dict:
    """Axis ticks on whole indices for an axis of n cells (no 0.5 ticks on short axes), at a
    round step (1, 2, 5, 10, 20, ...) giving at most about 8 ticks."""
    step = next(b * 10**e for e in range(8) for b in (1, 2, 5) if b * 10**e >= n / 8)
    return dict(tickmode="linear", tick0=0, dtick=step)


def _title(text: str, x: float) -> dict:
    """A subplot title centred above x (paper coordinates)."""
    return dict(text=text, x=x, y=1.0, xref="paper", yref="paper", xanchor="center",
                yanchor="bottom", showarrow=False, font=dict(size=14))


def tile_map(trace: Trace, n: int, *, height: int | None = None) -> go.Figure:
    """The [Tr, Tc] grid coloured by tile class, tiles visited up to step n shaded, step n's
    tile outlined. Click targets: the ``"click"`` trace (see the module docstring)."""
    c = trace.config
    status = trace.tile_status
    codes = np.vectorize(STATUS_CODE.get)(status)
    visited = np.full(status.shape, np.nan)
    step_of = {(s.i, s.j): s.n for s in trace.steps}
    for s in trace.steps[: n + 1]:
        visited[s.i, s.j] = 1.0
    cur = trace.steps[n]
    ii, jj = np.meshgrid(np.arange(c.Tr), np.arange(c.Tc), indexing="ij")
    ii, jj = ii.ravel().tolist(), jj.ravel().tolist()
    nn = [step_of.get((i, j), -1) for i, j in zip(ii, jj, strict=True)]
    hover = [
        f"Q block {i} (rows {c.rows(i)[0]}-{c.rows(i)[1] - 1}) x KV block {j} "
        f"(keys {c.keys(j)[0]}-{c.keys(j)[1] - 1})<br>{status[i, j]}"
        + (f", step {s} of {len(trace.steps)}" if s >= 0 else ": not computed")
        for i, j, s in zip(ii, jj, nn, strict=True)
    ]
    gap = 1 if max(c.Tr, c.Tc) <= 40 else 0  # cell borders, while cells are big enough
    cell = max(4, min(40, 420 / max(c.Tr, c.Tc)))
    square = dict(symbol="square", size=12)
    data = [
        dict(type="heatmap", name="tiles", z=codes.astype(np.int8), zmin=0, zmax=2,
             showscale=False, hoverinfo="skip", xgap=gap, ygap=gap,
             colorscale=_discrete_scale([STATUS_COLOR[k] for k in STATUS_CODE])),
        dict(type="heatmap", name="visited", z=_grid(visited), zmin=0, zmax=1, showscale=False,
             hoverinfo="skip", colorscale=[[0, VISITED_SHADE], [1, VISITED_SHADE]], xgap=gap,
             ygap=gap),
        dict(type="scatter", name="click", x=jj, y=ii, mode="markers", showlegend=False,
             customdata=[[s, i, j] for s, i, j in zip(nn, ii, jj, strict=True)],
             marker=dict(symbol="square", size=cell, color="rgba(0,0,0,0)"),
             selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1)),
             hovertext=hover, hoverinfo="text"),
        *(dict(type="scatter", x=[None], y=[None], mode="markers", name=name,  # legend only
               marker=dict(square, color=color)) for name, color in STATUS_COLOR.items()),
        dict(type="scatter", x=[None], y=[None], mode="markers", name="visited (shaded)",
             marker=dict(square, color=VISITED_SHADE)),
    ]
    if height is None:  # cells stay square; the grid hangs from the top-left corner
        height = int(130 + 340 * min(1.0, c.Tr / c.Tc)) if c.Tc >= c.Tr else 480
    return _figure(data, dict(
        height=height, margin=_MARGIN, clickmode="event+select", dragmode=False,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        xaxis=dict(title=dict(text="KV block j (keys)"), range=[-0.5, c.Tc - 0.5],
                   showgrid=False, zeroline=False, constrain="domain", constraintoward="left",
                   **_integer_ticks(c.Tc)),
        yaxis=dict(title=dict(text="Q block i" if c.Tr < 4 else "Q block i (query rows)"),
                   range=[c.Tr - 0.5, -0.5], showgrid=False, zeroline=False, scaleanchor="x",
                   constrain="domain", constraintoward="top", **_integer_ticks(c.Tr)),
        shapes=[dict(type="rect", name="current", xref="x", yref="y", x0=cur.j - 0.5,
                     x1=cur.j + 0.5, y0=cur.i - 0.5, y1=cur.i + 0.5,
                     line=dict(color=CURRENT_COLOR, width=3))],
    ))


def step_tiles(trace: Trace, n: int) -> go.Figure:
    """Step n's S tile (masked entries blank) and its P~ tile, side by side."""
    step = trace.steps[n]
    c = trace.config
    S, P = trace.tiles(n)
    i0, i1 = c.rows(step.i)
    k0, k1 = c.keys(step.j)
    x = list(range(k0, k1))
    y = list(range(i0, i1))
    finite = S[np.isfinite(S)]
    span = float(np.abs(finite).max()) if finite.size else 1.0
    data = [
        dict(type="heatmap", name="S", x=x, y=y, z=_grid(S), colorscale=DIVERGING, zmid=0,
             zmin=-span, zmax=span, xaxis="x", yaxis="y",
             colorbar=dict(x=0.41, len=0.9, thickness=12),
             hovertemplate="row %{y}, key %{x}<br>S = %{z:.4g}<extra></extra>"),
        dict(type="heatmap", name="P~", x=x, y=y, z=_grid(P), colorscale="Viridis", zmin=0,
             zmax=1, xaxis="x2", yaxis="y2", colorbar=dict(x=1.01, len=0.9, thickness=12),
             hovertemplate="row %{y}, key %{x}<br>P~ = %{z:.4g}<extra></extra>"),
    ]
    axis = dict(showgrid=False, zeroline=False)
    return _figure(data, dict(
        height=360 if len(y) > 4 else 220, margin=_MARGIN,
        plot_bgcolor="#d1d5db",  # masked cells show this grey
        xaxis=dict(axis, domain=[0, 0.4], anchor="y", title=dict(text="key")),
        xaxis2=dict(axis, domain=[0.6, 1.0], anchor="y2", title=dict(text="key")),
        yaxis=dict(axis, anchor="x", autorange="reversed", title=dict(text="query row"),
                   **_integer_ticks(len(y))),
        yaxis2=dict(axis, anchor="x2", autorange="reversed", showticklabels=False),
        annotations=[_title("S (blank: masked)", 0.2),
                     _title("P~ = exp(S − m<sub>new</sub>)", 0.8)],
    ))


def row_history(trace: Trace, n: int, r: int, *, all_rows: bool = False) -> go.Figure:
    """m and l of query row r after each step of its Q block, up to step n; rescale events
    (alpha < 1 with state to rescale) marked. ``all_rows``: m of every row of the block too."""
    c = trace.config
    i0, _ = c.rows(r // c.Br)
    t = r - i0
    steps = trace.row_history(r)
    upto = [s for s in steps if s.n <= n]
    js = [s.j for s in upto]
    data = []
    if all_rows and upto:
        M = np.stack([s.m for s in upto], axis=1)  # [rows of block i, steps so far]
        data += [dict(type="scatter", x=js, y=_nan_to_none(row), mode="lines",
                      name=f"m row {i0 + tt}", showlegend=tt == 0, legendgroup="all",
                      hoverinfo="skip", line=dict(width=1, color="rgba(100,116,139,0.35)"))
                 for tt, row in enumerate(M)]
    resc = [s for s in upto if s.alpha[t] != 1.0 and np.isfinite(s.m_before[t])]
    data += [
        dict(type="scatter", x=js, y=_nan_to_none([s.m[t] for s in upto]),
             mode="lines+markers", name=f"m (row {r})", line=dict(color="#2563eb", width=3)),
        dict(type="scatter", x=js, y=[float(s.l[t]) for s in upto], mode="lines+markers",
             name=f"l (row {r})", yaxis="y2", line=dict(color="#16a34a", width=3, dash="dot")),
        dict(type="scatter", name="rescale (alpha < 1)", x=[s.j for s in resc],
             y=[float(s.m[t]) for s in resc], mode="markers",
             marker=dict(symbol="triangle-up", size=14, color=RESCALE_COLOR),
             customdata=[[float(s.alpha[t]), s.n] for s in resc],
             hovertemplate="KV block %{x}, step %{customdata[1]}<br>alpha = "
                           "%{customdata[0]:.4g}<extra></extra>"),
    ]
    cur = trace.steps[n]
    all_js = [s.j for s in steps]
    return _figure(data, dict(
        height=380, margin=dict(_MARGIN, t=20, b=110),
        legend=dict(orientation="h", yanchor="top", y=-0.22, x=0),
        xaxis=dict(title=dict(text="KV block j"), range=[min(all_js) - 0.5, max(all_js) + 0.5],
                   dtick=max(1, math.ceil(len(all_js) / 16))),
        yaxis=dict(title=dict(text="running max m")),
        yaxis2=dict(title=dict(text="running denominator l"), overlaying="y", side="right",
                    rangemode="tozero", showgrid=False),
        shapes=[dict(type="line", name="current", xref="x", yref="paper", x0=cur.j, x1=cur.j,
                     y0=0, y1=1, line=dict(color=CURRENT_COLOR, width=2, dash="dash"))],
    ))


def output_rows(trace: Trace, n: int, done: np.ndarray, err_o: np.ndarray,
                max_rows: int = 256) -> go.Figure:
    """Left: O for the rows finished by step n (others blank); right: each finished row's
    max |O - O_oracle|. More than ``max_rows`` rows: the heatmap shows every k-th row."""
    c = trace.config
    stride = max(1, math.ceil(c.Lq / max_rows))
    rows = np.arange(0, c.Lq, stride)
    O = np.where(done[:, None], trace.out, np.nan)[rows]
    r_done = np.flatnonzero(done)
    data = [
        dict(type="heatmap", name="O", x=list(range(c.D)), y=rows.tolist(), z=_grid(O),
             colorscale=DIVERGING, zmid=0, xaxis="x", yaxis="y",
             colorbar=dict(x=0.42, len=0.9, thickness=12),
             hovertemplate="row %{y}, d %{x}<br>O = %{z:.4g}<extra></extra>"),
        # an error of exactly 0 cannot sit on a log axis: draw it at 1e-12
        dict(type="scatter", name="error", x=r_done.tolist(),
             y=np.maximum(err_o[r_done], 1e-12).tolist(), mode="markers", xaxis="x2",
             yaxis="y2", marker=dict(size=4, color="#7c3aed")),
    ]
    every = f" (every {stride}th row)" if stride > 1 else ""
    return _figure(data, dict(
        height=320, margin=_MARGIN, showlegend=False,
        xaxis=dict(domain=[0, 0.4], anchor="y", title=dict(text="d (head dim)")),
        yaxis=dict(anchor="x", autorange="reversed", title=dict(text="query row")),
        xaxis2=dict(domain=[0.6, 1.0], anchor="y2", title=dict(text="query row"),
                    range=[-0.5, c.Lq - 0.5]),
        yaxis2=dict(anchor="x2", type="log", exponentformat="power"),
        annotations=[_title("O rows finished so far" + every, 0.2),
                     _title("max |O − O<sub>float64 oracle</sub>| per finished row", 0.8)],
    ))


def bytes_label(b: float) -> str:
    for unit, k in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= k:
            return f"{b / k:.3g} {unit}"
    return f"{b:.0f} B"


def _length_label(L: int) -> str:
    return f"{L // 1024}K" if L >= 1024 and L % 1024 == 0 else str(L)


def _line(x, y, name: str, color: str, dash: str) -> go.Scatter:
    """A straight reference line drawn as a trace (works on log axes)."""
    return go.Scatter(x=x, y=y, mode="lines", name=name, hoverinfo="name",
                      line=dict(color=color, dash=dash, width=2))


def _seconds_label(s: float) -> str:
    for unit, k in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= k:
            return f"{s / k:g} {unit}"
    return f"{s * 1e9:g} ns"


def memory_chart(Ls: list[int], series: dict[str, list[int]], *, ram: int, current_L: int,
                 measured: dict[str, tuple[int, int]] | None = None,
                 x_title: str = "sequence length L") -> go.Figure:
    """Bytes of each method over L (log-log), this machine's RAM as a horizontal line, the
    current L as a vertical line; ``measured``: name -> (L, peak extra bytes) points."""
    fig = go.Figure()
    for name, ys in series.items():
        if not any(ys):
            continue  # e.g. no GQA copy when Hq == Hkv
        fig.add_trace(go.Scatter(
            x=Ls, y=[y if y > 0 else None for y in ys], mode="lines+markers", name=name,
            customdata=[bytes_label(y) for y in ys],
            hovertemplate="L = %{x}<br>%{customdata}<extra>" + name + "</extra>"))
    for name, (L, b) in (measured or {}).items():
        fig.add_trace(go.Scatter(
            x=[L], y=[max(b, 1)], mode="markers", name=f"measured: {name}",
            marker=dict(symbol="x", size=13, line=dict(width=2)),
            hovertemplate=f"measured {name}<br>L = %{{x}}<br>{bytes_label(b)}<extra></extra>"))
    lo = min(min(y for y in ys if y > 0) for ys in series.values() if any(ys))
    hi = max(max(max(ys) for ys in series.values()), ram)
    # reference lines as traces: layout shapes on log axes would need log10 coordinates
    fig.add_trace(_line([Ls[0], Ls[-1]], [ram, ram], f"this machine's RAM ({bytes_label(ram)})",
                        CURRENT_COLOR, "dash"))
    fig.add_trace(_line([current_L, current_L], [lo, hi], f"current L = {current_L}",
                        "#64748b", "dot"))
    ticks = [L for L in Ls if L == Ls[0] or L == Ls[-1] or (L.bit_length() - 1) % 2 == 1]
    fig.update_xaxes(type="log", title_text=x_title, tickvals=ticks,
                     ticktext=[_length_label(L) for L in ticks])
    exps = range(int(math.log2(lo)) // 10 * 10, int(math.log2(hi)) + 10, 10)
    fig.update_yaxes(type="log", title_text="bytes", tickvals=[2**k for k in exps],
                     ticktext=[bytes_label(2**k) for k in exps])
    fig.update_layout(height=420, template=_TEMPLATE, margin=_MARGIN,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return fig


def crossover(rows: list[dict]) -> int | None:
    """The smallest L from which streaming is faster than standard at every measured L
    where both ran; None if that never happens."""
    both = [r for r in rows if r.get("standard_s") and r.get("streaming_s")]
    for k, r in enumerate(both):
        if all(b["streaming_s"] < b["standard_s"] for b in both[k:]):
            return r["L"]
    return None


def crossover_chart(rows: list[dict]) -> go.Figure:
    """Median time of standard vs streaming over L (log-log); the L where standard was refused
    marked (at streaming's time); the crossover (``crossover``) as a vertical line."""
    fig = go.Figure()
    times = [r[k] for r in rows for k in ("standard_s", "streaming_s") if r.get(k)]
    for key, name, color in (("standard_s", "standard (materializes S)", "#ea580c"),
                             ("streaming_s", "streaming (tiles)", "#2563eb")):
        pts = [r for r in rows if r.get(key)]
        fig.add_trace(go.Scatter(
            name=name, x=[r["L"] for r in pts], y=[r[key] for r in pts], mode="lines+markers",
            line=dict(color=color), customdata=[r.get(key.replace("_s", "_gflops")) for r in pts],
            hovertemplate="L = %{x}<br>%{y:.4g} s<br>%{customdata:.3g} GFLOP/s<extra></extra>"))
    refused = [r for r in rows if r.get("standard_skipped")]
    if refused:
        ys = [r.get("streaming_s") for r in refused]
        fig.add_trace(go.Scatter(
            name="standard refused (memory guard)", x=[r["L"] for r in refused], y=ys,
            mode="markers", marker=dict(symbol="x", size=12, color="#ea580c"),
            customdata=[r["standard_skipped"] for r in refused],
            hovertemplate="L = %{x}<br>%{customdata}<extra></extra>"))
    x = crossover(rows)
    if x is not None:
        fig.add_trace(_line([x, x], [min(times), max(times)],
                            f"crossover: streaming faster from L = {x}", "#16a34a", "dash"))
    Ls = sorted({r["L"] for r in rows})
    fig.update_xaxes(type="log", title_text="sequence length L", tickvals=Ls,
                     ticktext=[_length_label(L) for L in Ls])
    if times:
        decades = range(math.floor(math.log10(min(times))), math.ceil(math.log10(max(times))) + 1)
        ticks = [f * 10.0**e for e in decades for f in (1, 2, 5)]
        fig.update_yaxes(tickvals=ticks, ticktext=[_seconds_label(t) for t in ticks])
    fig.update_yaxes(type="log", title_text="median time per call")
    fig.update_layout(height=400, template=_TEMPLATE, margin=_MARGIN,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0))
    return fig


def block_sweep_chart(Brs: list[int], Bcs: list[int], gflops: np.ndarray) -> go.Figure:
    """GFLOP/s of the streaming kernel over (Q block, KV block); NaN = not measured; the
    best cell outlined."""
    fig = go.Figure(go.Heatmap(
        name="GFLOP/s", x=[str(b) for b in Bcs], y=[str(b) for b in Brs],
        z=_grid(gflops), colorscale="Viridis", colorbar=dict(title="GFLOP/s"),
        text=[[("" if not np.isfinite(g) else f"{g:.1f}") for g in row] for row in gflops],
        texttemplate="%{text}", hovertemplate="Br = %{y}, Bc = %{x}<br>%{z:.3g} GFLOP/s"
                                              "<extra></extra>"))
    if np.isfinite(gflops).any():
        bi, bj = np.unravel_index(np.nanargmax(gflops), gflops.shape)
        fig.add_shape(type="rect", name="best", x0=bj - 0.5, x1=bj + 0.5, y0=bi - 0.5,
                      y1=bi + 0.5, line=dict(color=CURRENT_COLOR, width=3))
    fig.update_xaxes(title_text="KV block Bc", type="category")
    fig.update_yaxes(title_text="Q block Br", type="category", autorange="reversed")
    fig.update_layout(height=360, template=_TEMPLATE, margin=_MARGIN)
    return fig
