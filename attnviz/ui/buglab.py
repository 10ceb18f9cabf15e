"""The bug lab: a selector of the classic mistakes (sidebar), and with one on, a banner that
names it, marks the first step where a finished row departs from the float64 oracle, shows
the per-row error, and goes back to the correct algorithm in one click.

The bug is part of the configuration (``ViewConfig.bug``, ``?bug=`` in the URL): the trace
is the buggy loop's (``run_trace(..., bug=...)``), so the step view shows its numbers.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from ..bugs import BUGS, MASK_BUGS, changes_nothing
from ..trace import step_label
from ..viewconfig import ViewConfig
from . import state
from .cache import TracedHead

KEY = "bug"  # the ViewConfig field


def _label(name: str | None) -> str:
    return "none: the correct algorithm" if name is None else name


def sidebar(cfg: ViewConfig) -> None:
    sb = st.sidebar
    sb.subheader("Bug lab")
    sb.selectbox("Run a classic mistake", [None, *BUGS], key=KEY, format_func=_label,
                 help="Each is a variant of the traced loop (the timed kernels are never "
                      "changed). The step view then shows the buggy numbers.")
    if cfg.bug:
        sb.caption(f"**{cfg.bug}**: {BUGS[cfg.bug]}.")


def _correct() -> None:
    st.session_state[KEY] = None


def _goto(n: int) -> None:
    st.session_state[state.STEP] = n
    state.navigated()


def error_chart(err: np.ndarray) -> go.Figure:
    """Per-row max |O − oracle| (log scale); non-finite rows as red marks at the top."""
    rows = np.arange(err.shape[0])
    bad = ~np.isfinite(err)
    finite = np.where(bad, np.nan, np.maximum(err, 1e-12))
    top = float(np.nanmax(finite)) * 10 if np.isfinite(finite).any() else 1.0
    fig = go.Figure(go.Bar(x=rows, y=finite, name="max |O − oracle|", marker_color="#2563eb",
                           hovertemplate="row %{x}: %{y:.3g}<extra></extra>"))
    if bad.any():
        fig.add_trace(go.Scatter(x=rows[bad], y=np.full(int(bad.sum()), top), mode="markers",
                                 marker=dict(color="#dc2626", symbol="x"),
                                 name="not finite (inf or NaN)"))
    fig.update_layout(height=220, margin=dict(l=60, r=20, t=10, b=40), yaxis_type="log",
                      xaxis_title="query row", yaxis_title="error",
                      legend=dict(orientation="h", y=-0.35))
    return fig


def banner(head: TracedHead, cfg: ViewConfig) -> None:
    """Nothing without a bug; with one: what it is, where it departs, the per-row error."""
    trace = head.trace
    if not trace.bug:
        return
    with st.container(border=True, key="bug_banner"):
        err = trace.row_error(head.O_ref)
        first = trace.first_departure(head.O_ref)
        lines = [f"**Bug lab: `{trace.bug}`**: {BUGS[trace.bug]}. The step view shows the "
                 "numbers exactly as this buggy loop produces them (the live math keeps the "
                 "correct formulas: compare)."]
        idle = changes_nothing(trace.config.mask, trace.bug) if trace.bug in MASK_BUGS else None
        if idle:
            lines.append(f"No effect on this configuration: {idle}")
        if first is None:
            lines.append("Every finished row still agrees with the float64 oracle here "
                         f"(max error {np.max(err, initial=0):.1e})."
                         + (" Try larger logits (scenario) or more tiles per row."
                            if not idle else ""))
            st.info("\n\n".join(lines), icon=":material/bug_report:")
        else:
            nbad = int((err > 1e-4 * max(1.0, float(np.abs(head.O_ref).max()))).sum())
            inf = int((~np.isfinite(err)).sum())
            worst = np.max(err[np.isfinite(err)], initial=0)
            lines.append(f"**First departure at step {step_label(first)}**, when Q block "
                         f"{trace.steps[first].i} finishes: {nbad} of {trace.config.Lq} rows "
                         f"depart from the oracle" + (f", {inf} of them not finite"
                                                      if inf else "")
                         + f"; largest finite error {worst:.3g}.")
            st.error("\n\n".join(lines), icon=":material/bug_report:")
        with st.container(horizontal=True):
            st.button("Back to the correct algorithm", key="bug_off", on_click=_correct,
                      type="primary", icon=":material/undo:")
            if first is not None:
                st.button(f"Go to step {step_label(first)}", key="bug_goto", on_click=_goto,
                          args=(first,))
        st.plotly_chart(error_chart(err), key="bug_errors", config={"displayModeBar": False})


def step_note(head: TracedHead, n: int) -> None:
    """In the step view, with a bug on: whether this step is before or after the departure."""
    trace = head.trace
    if not trace.bug:
        return
    first = trace.first_departure(head.O_ref)
    if first is not None and n >= first:
        st.warning(f"Bug `{trace.bug}` on: from step {step_label(first)} on, finished rows "
                   "depart from the oracle.", icon=":material/bug_report:")
    else:
        st.info(f"Bug `{trace.bug}` on: the numbers below are the buggy loop's.",
                icon=":material/bug_report:")
