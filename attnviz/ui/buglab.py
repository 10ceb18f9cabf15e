"""The bug lab: a selector of the classic mistakes (sidebar), and with one on, a banner that
names it, marks the first step where a finished row departs from the float64 oracle, shows
the per-row error, and goes back to the correct algorithm in one click. An overflow bug
(``OVERFLOW_BUGS``) that does not depart on the current inputs gets a one-click switch to the
large-logits scenario, offered only when that scenario's trace (built here, and cached as the
click will need it) does depart.

The bug is part of the configuration (``ViewConfig.bug``, ``?bug=`` in the URL): the trace
is the buggy loop's (``run_trace(..., bug=...)``), so the step view shows its numbers.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from ..bugs import BUGS, MASK_BUGS, OVERFLOW_BUGS, changes_nothing
from ..trace import departure_tol, step_label
from ..viewconfig import ViewConfig
from . import state
from .cache import TracedHead, traced_head

KEY = "bug"  # the ViewConfig field
SCENARIO, LARGE = "scenario", "large_logits"  # the ViewConfig field and the scenario


def _label(name: str | None) -> str:
    return "none: the correct algorithm" if name is None else name


def sidebar(cfg: ViewConfig, sb=None) -> None:
    """The bug lab's picker, in ``sb`` (a sidebar container; default the sidebar)."""
    sb = sb or st.sidebar
    sb.subheader("Bug lab")
    sb.selectbox("Run a classic mistake", [None, *BUGS], key=KEY, format_func=_label,
                 help="Each is a variant of the traced loop (the timed kernels are never "
                      "changed). The step view then shows the buggy numbers.")
    if cfg.bug:
        sb.caption(f"**{cfg.bug}**: {BUGS[cfg.bug]}.")


def _correct() -> None:
    st.session_state[KEY] = None


def _large_logits() -> None:
    st.session_state[SCENARIO] = LARGE  # the bug stays on


def large_logits_departure(head: TracedHead, cfg: ViewConfig) -> int | None:
    """The step where the same buggy loop departs on large logits, when the bug is an
    overflow one that the current (scenario) inputs do not show; else None."""
    if (head.trace.bug not in OVERFLOW_BUGS or head.source is not None
            or cfg.scenario == LARGE):
        return None
    other = traced_head(replace(cfg, scenario=LARGE))
    return other.trace.first_departure(other.O_ref)


def _goto(n: int) -> None:
    st.session_state[state.STEP] = n
    state.navigated()


ERROR_TITLE = ("Error of each query row's final output: max |O − O₆₄| over its D entries "
               "(O₆₄: float64 oracle)")


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
    fig.update_layout(height=250, margin=dict(l=60, r=20, t=40, b=40), yaxis_type="log",
                      title=dict(text=ERROR_TITLE, font=dict(size=14), x=0, xanchor="left"),
                      xaxis_title="query row", yaxis_title="max |O − O₆₄| (log)",
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
        reveal = large_logits_departure(head, cfg) if first is None and not idle else None
        if first is None:
            lines.append("Every finished row still agrees with the float64 oracle here "
                         f"(max error {np.max(err, initial=0):.1e}).")
            if reveal is not None:
                lines.append(f"This bug only shows when exp overflows float32: on the "
                             f"**large logits** scenario its rows depart from step "
                             f"{step_label(reveal)} on. Switch with the button below (the bug "
                             "stays on).")
            elif not idle and head.source is None and (cfg.scenario == LARGE
                                                   or trace.bug in OVERFLOW_BUGS):
                # large logits are on, or were tried (and show nothing either)
                lines.append("Large logits do not show it on this configuration: try more "
                             "tiles per row (a smaller Bc, a longer sequence).")
            elif not idle:
                lines.append("Try larger logits (scenario) or more tiles per row.")
            st.info("\n\n".join(lines), icon=":material/bug_report:")
        else:
            nbad = int((err > departure_tol(head.O_ref)).sum())
            inf = int((~np.isfinite(err)).sum())
            worst = np.max(err[np.isfinite(err)], initial=0)
            lines.append(f"**First departure at step {step_label(first)}**, when Q block "
                         f"{trace.steps[first].i} finishes; by the last step {nbad} of "
                         f"{trace.config.Lq} rows depart from the oracle" + (
                             f", {inf} of them not finite"
                                                      if inf else "")
                         + f"; largest finite error {worst:.3g}.")
            st.error("\n\n".join(lines), icon=":material/bug_report:")
        with st.container(horizontal=True):
            st.button("Back to the correct algorithm", key="bug_off", on_click=_correct,
                      type="primary", icon=":material/undo:")
            if first is not None:
                st.button(f"Go to step {step_label(first)}", key="bug_goto", on_click=_goto,
                          args=(first,))
            if reveal is not None:
                st.button("Show it on large logits", key="bug_large", on_click=_large_logits,
                          icon=":material/trending_up:")
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
