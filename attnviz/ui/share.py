"""Share and export: the view's URL, the trace as JSON/CSV, a figure as PNG.

The address bar always holds the configuration and the step (``state.write_url``), so a
copied link reopens this view. Downloads are generated only when clicked (``data`` is a
callable), so stepping never pays for them.
"""
from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from .. import plots
from ..export import figure_png, trace_csv, trace_json
from ..stats import output_error
from ..viewconfig import ViewConfig, to_query
from .cache import TracedHead

FIGURES = ("tile map", "S and P~ tiles", "row history", "output rows")


def figure(name: str, head: TracedHead, cfg: ViewConfig, n: int, r: int):
    """The named figure of step n (row r for the row history), titled for a slide."""
    trace = head.trace
    if name == "tile map":
        fig = plots.tile_map(trace, n)
    elif name == "S and P~ tiles":
        fig = plots.step_tiles(trace, n)
    elif name == "row history":
        fig = plots.row_history(trace, n, r)
    else:
        done, err_o, _ = output_error(trace, head.O_ref, head.lse_ref, n)
        fig = plots.output_rows(trace, n, done, err_o)
    s = trace.steps[n]
    return fig.update_layout(
        title=dict(text=f"{name}, step {n}: Q block {s.i} × KV block {s.j}<br>"
                        f"<sup>{cfg.describe()}</sup>", x=0.01, xanchor="left",
                   yref="container", y=1, yanchor="top", pad=dict(t=14)),
        margin=dict(t=120), width=600 if name == "tile map" else 1100)


def render(head: TracedHead, cfg: ViewConfig, n: int, r: int) -> None:
    with st.expander("Share and export", expanded=False):
        st.caption("The address bar holds this configuration and step: copy it to share "
                   "this exact view. These are its parameters:")
        offset = r - head.trace.config.rows(head.trace.steps[n].i)[0]
        # inline code, not st.code: that one loads a 1.5 MB syntax highlighter on page load
        st.markdown(f"`?{urlencode(to_query(cfg, step=n, row=offset))}`")
        stem = f"attnviz_{cfg.mode}_Lq{cfg.Lq}_Lk{cfg.Lk}_D{cfg.D}_{cfg.Br}x{cfg.Bc}"
        meta = {"view": to_query(cfg), "describe": cfg.describe()}
        c1, c2, c3, c4 = st.columns([1, 1, 2, 1.3], vertical_alignment="bottom")
        c1.download_button("Trace (JSON)", lambda: trace_json(head.trace, meta),
                           file_name=f"{stem}.json", mime="application/json",
                           key="dl_json", on_click="ignore")
        c2.download_button("Trace (CSV)", lambda: trace_csv(head.trace),
                           file_name=f"{stem}.csv", mime="text/csv", key="dl_csv",
                           on_click="ignore")
        name = c3.selectbox("Figure", FIGURES, key="png_figure")
        c4.download_button("Figure (PNG)", lambda: figure_png(figure(name, head, cfg, n, r)),
                           file_name=f"{stem}_step{n}_{name.replace(' ', '_')}.png",
                           mime="image/png", key="dl_png", on_click="ignore")
