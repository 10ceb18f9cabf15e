"""Charts of the split-KV and numerics labs (Plotly): pure functions of the labs' results.

Like ``attnviz.plots``, nothing here imports Streamlit; the tests read the traces back. The
labs' tabs are drawn only when opened, so Plotly's script costs nothing on the step view.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from .numerics import Accumulation, ErrorSweep, MaskedRows, Overflow
from .plots import _MARGIN, _TEMPLATE

NAN_COLOR = "#dc2626"
# the overflow chart's ln(max) labels, in log10 units (Plotly places annotations on a log
# axis by the exponent): above the NaN marks' band (<= 10), one row each (on a narrow
# chart the two labels are wider than the gap between their lines), below the axis top
LABEL_LOG10 = {"float16": 2.8, "float32": 1.8}
TOP_LOG10 = 3.4
DTYPE_COLORS = {"float32": "#2563eb", "float16": "#ea580c", "bfloat16": "#16a34a"}


def _layout(fig: go.Figure, title: str, height: int = 360, **kw) -> go.Figure:
    kw.setdefault("legend", dict(orientation="h", y=-0.22))
    fig.update_layout(template=_TEMPLATE, title=dict(text=title, x=0.01), height=height,
                      margin=_MARGIN, **kw)
    return fig


def chunk_label(c: int, keys: tuple[int, int]) -> str:
    return f"c{c} [{keys[0]}, {keys[1]})"


def merge_weights_chart(weights: np.ndarray, keys: list[tuple[int, int]]) -> go.Figure:
    """Grouped bars: chunk c's weight exp(LSE_c - LSE) for each query head (they sum to 1)."""
    labels = [f"c{c}" for c in range(len(keys))]
    spans = [f"keys [{a}, {b})" for a, b in keys]
    fig = go.Figure([go.Bar(x=labels, y=weights[:, h], name=f"head {h}", customdata=spans,
                            hovertemplate="%{x}, %{customdata}: %{y:.4g}<extra>head "
                                          + str(h) + "</extra>")
                     for h in range(weights.shape[1])])
    return _layout(fig, "Merge weights exp(LSE_c − LSE)", barmode="group",
                   yaxis=dict(title="share of O", range=[0, 1.02]),
                   xaxis=dict(title="chunk", tickangle=0))


def _log_series(fig, x, y, name, color, dash="solid", symbol="circle"):
    y = np.asarray(y, float)
    fig.add_trace(go.Scatter(x=x, y=np.where(y > 0, y, np.nan), name=name,
                             mode="lines+markers", line=dict(color=color, dash=dash),
                             marker=dict(symbol=symbol, size=7),
                             hovertemplate="%{x:.3g}: %{y:.3g}<extra>" + name + "</extra>"))


def error_sweep_chart(e: ErrorSweep) -> go.Figure:
    """max |O − O_float64| against the logit scale, per method (log-log); NaN points (the
    low-precision standard overflowed) are marked on the top edge."""
    fig = go.Figure()
    _log_series(fig, e.logit_std, e.standard, f"standard, S P l O in {e.dtype}", "#ea580c")
    _log_series(fig, e.logit_std, e.streaming, f"streaming (fp32 inside), O stored in {e.dtype}",
                "#2563eb")
    _log_series(fig, e.logit_std, e.streaming_fp32, "streaming, O kept in float32", "#7c3aed",
                dash="dot")
    _log_series(fig, e.logit_std, e.floor, f"floor: exact O rounded to {e.dtype}", "#6b7280",
                dash="dash", symbol="x")
    bad = np.isnan(e.standard)
    if bad.any():
        fig.add_trace(go.Scatter(x=e.logit_std[bad], y=np.ones(bad.sum()), mode="markers",
                                 name="standard: NaN/Inf", yaxis="y",
                                 marker=dict(color=NAN_COLOR, symbol="x-thin-open", size=12)))
    return _layout(fig, f"Error vs float64, inputs in {e.dtype}",
                   xaxis=dict(title="std of the logits S", type="log",
                              tickvals=list(e.logit_std), ticktext=[f"{x:g}" for x in e.logit_std]),
                   yaxis=dict(title="max |O − O_float64|", type="log", exponentformat="power"))


def accumulation_chart(a: Accumulation) -> go.Figure:
    fig = go.Figure()
    _log_series(fig, a.n, a.err_low, f"acc in {a.dtype} (emulated: rounded after every add)",
                "#ea580c")
    _log_series(fig, a.n, a.err_fp32, "acc in float32 (what the kernels do)", "#2563eb")
    return _layout(fig, "P~V summed key by key",
                   xaxis=dict(title="keys summed n", type="log"),
                   yaxis=dict(title="max |O − O_float64|", type="log", exponentformat="power"))


def overflow_chart(o: Overflow) -> go.Figure:
    """Error of softmax without max subtraction vs the top logit x, per dtype; where it is
    NaN (exp overflowed) a mark sits on the dtype's own line of the top band; dashed lines
    at ln(max)."""
    fig = go.Figure()
    for (name, err), band in zip(o.naive.items(), (10.0, 4.0, 1.6), strict=True):
        color = DTYPE_COLORS[name]
        fig.add_trace(go.Scatter(x=o.x, y=err, mode="lines", name=f"{name}, no max subtracted",
                                 line=dict(color=color),
                                 hovertemplate="x = %{x}: %{y:.3g}<extra>" + name + "</extra>"))
        bad = np.isnan(err)
        fig.add_trace(go.Scatter(x=o.x[bad], y=np.full(bad.sum(), band), mode="markers",
                                 name=f"{name}: NaN", hoverinfo="skip",
                                 marker=dict(color=color, symbol="line-ns-open", size=8)))
    for name, err in o.safe.items():
        fig.add_trace(go.Scatter(x=o.x, y=err, mode="lines", name=f"{name}, max subtracted",
                                 line=dict(color=DTYPE_COLORS[name], dash="dot"),
                                 hovertemplate="x = %{x}: %{y:.3g}<extra>" + name + "</extra>"))
    wide = max(o.limit["float32"], o.limit["bfloat16"])
    # the labels sit in a band above every trace (errors <= 1, NaN marks <= 10): on the
    # plotted data they hid the curves; fp16's reads rightwards, fp32's leftwards of its line
    for x, text, color, side in (
            (o.limit["float16"], f"ln(max fp16) = {o.limit['float16']:.2f}", "float16", "left"),
            (wide, f"ln(max fp32, bf16) = {wide:.2f}", "float32", "right")):
        fig.add_vline(x=x, line=dict(color=DTYPE_COLORS[color], dash="dash"))
        fig.add_annotation(x=x, y=LABEL_LOG10[color], text=text, showarrow=False,
                           xanchor=side, xshift=4 if side == "left" else -4,
                           font=dict(color=DTYPE_COLORS[color], size=11))
    return _layout(fig, "Softmax of a row with top logit x", height=520,
                   xaxis=dict(title="top logit x", range=[0, 100]),
                   yaxis=dict(title="max |p − p_exact|", type="log", exponentformat="power",
                              range=[-9, TOP_LOG10], tickvals=[1e-9, 1e-6, 1e-3, 1]))


def _cell_text(a: np.ndarray) -> list[list[str]]:
    return [[("NaN" if np.isnan(x) else "−inf" if x == -np.inf else f"{x:.2f}") for x in row]
            for row in a]


def masked_rows_chart(mr: MaskedRows) -> go.Figure:
    """P~ of the tile without the guard (NaN cells red) and with it, side by side."""
    from plotly.subplots import make_subplots

    fig = make_subplots(1, 2, subplot_titles=("without the guard", "with the guard"),
                        horizontal_spacing=0.1)
    for col, P in ((1, mr.P_raw), (2, mr.P)):
        z = np.where(np.isnan(P), np.nan, P)
        fig.add_trace(go.Heatmap(z=z, text=_cell_text(P), texttemplate="%{text}",
                                 textfont=dict(size=9), colorscale="Blues", zmin=0, zmax=1,
                                 showscale=col == 2,
                                 hovertemplate="row %{y}, key %{x}: %{text}<extra></extra>"),
                      1, col)
        nan_r, nan_c = np.nonzero(np.isnan(P))
        fig.add_trace(go.Scatter(x=nan_c, y=nan_r, mode="markers", showlegend=False,
                                 marker=dict(symbol="square", size=30, color=NAN_COLOR,
                                             opacity=0.35), hoverinfo="skip"), 1, col)
    fig.update_yaxes(autorange="reversed", dtick=1)
    fig.update_yaxes(title_text="row", col=1)
    fig.update_xaxes(title_text="key", dtick=1, range=[-0.5, mr.P.shape[1] - 0.5])
    fig.update_layout(template=_TEMPLATE, height=330, margin=dict(l=50, r=20, t=40, b=50))
    return fig

