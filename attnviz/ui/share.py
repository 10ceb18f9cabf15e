"""Share and export: the view's URL, the trace as JSON/CSV, a figure as PNG.

The address bar always holds the configuration and the step (``state.write_url``), so a
copied link reopens this view. Downloads are generated only when clicked (``data`` is a
callable), so stepping never pays for them. A figure's PNG is the image the page shows
(``attnviz.images``) under a title band naming the step and the configuration.
"""
from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from .. import images
from ..export import trace_csv, trace_json
from ..stats import output_error
from ..trace import step_label
from ..viewconfig import ViewConfig, to_query, typed_view
from . import state
from .cache import TracedHead

KEY = "share"
FIGURES = ("tile map", "S and P~ tiles", "row history", "output rows")


def figure(name: str, head: TracedHead, n: int, r: int, all_rows: bool = False
           ) -> images.Figure:
    """The named figure of step n (row r for the row history), as the page shows it."""
    trace = head.trace
    if name == "tile map":
        return images.tile_map(trace, n)
    if name == "S and P~ tiles":
        return images.step_tiles(trace, n)
    if name == "row history":
        return images.row_history(trace, n, r, all_rows=all_rows)
    done, err_o, _ = output_error(trace, head.O_ref, head.lse_ref, n)
    return images.output_rows(trace, n, done, err_o)


def figure_png(name: str, head: TracedHead, cfg: ViewConfig, n: int, r: int,
               all_rows: bool = False) -> bytes:
    """The named figure under a title for a slide: what, which step, which configuration."""
    s = head.trace.steps[n]
    return figure(name, head, n, r, all_rows).titled_png(
        f"{name}, step {step_label(n)} of {len(head.trace.steps)}: Q block {s.i} × KV block "
        f"{s.j}", cfg.describe())


def render(head: TracedHead, cfg: ViewConfig, n: int, r: int) -> None:
    # lazy: the contents run only while open (closed, they would cost every step ~25 ms of
    # browser work); opening it reruns the step view
    with st.expander("Share and export", key=KEY, on_change="rerun") as box:
        if not box.open:
            return
        st.caption("The address bar holds this configuration and step: copy it to share "
                   "this exact view. These are its parameters (``step`` counts from 0: "
                   f"step {step_label(n)} on the page is ``step={n}``):")
        offset = r - head.trace.config.rows(head.trace.steps[n].i)[0]
        # inline code, not st.code: that one loads a 1.5 MB syntax highlighter on page load
        st.markdown(f"`?{urlencode(to_query(cfg, step=n, row=offset))}`")
        source = {"source": head.source} if head.source else {}  # e.g. uploaded arrays
        stem = f"attnviz_{cfg.mode}_Lq{cfg.Lq}_Lk{cfg.Lk}_D{cfg.D}_{cfg.Br}x{cfg.Bc}"
        meta = {"view": typed_view(cfg), "describe": cfg.describe()}
        c1, c2, c3, c4 = st.columns([1, 1, 2, 1.3], vertical_alignment="bottom")
        c1.download_button("Trace (JSON)", lambda: trace_json(head.trace, {**meta, **source}),
                           file_name=f"{stem}.json", mime="application/json",
                           key="dl_json", on_click="ignore")
        c2.download_button("Trace (CSV)", lambda: trace_csv(head.trace),
                           file_name=f"{stem}.csv", mime="text/csv", key="dl_csv",
                           on_click="ignore")
        name = c3.selectbox("Figure", FIGURES, key="png_figure")
        all_rows = bool(st.session_state.get(state.ALL_ROWS, False))
        c4.download_button("Figure (PNG)", lambda: figure_png(name, head, cfg, n, r, all_rows),
                           file_name=f"{stem}_step{step_label(n)}_{name.replace(' ', '_')}.png",
                           mime="image/png", key="dl_png", on_click="ignore")
