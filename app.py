"""attnviz: block-wise streaming attention, tile by tile (``make run``, or
``streamlit run app.py``).

The page: sidebar controls; the step view (tile map, the current tile, one row's live math,
finished outputs, share/export) as a fragment that reruns alone when stepping or playing;
then memory and timing. Panels live in ``attnviz/ui``; this file only wires them.
"""
from __future__ import annotations

import streamlit as st

from attnviz.ui import (
    backward,
    buglab,
    cache,
    detail,
    figures,
    memory,
    numerics,
    quiz,
    share,
    sidebar,
    splitkv,
    state,
    stepper,
    tilemap,
    timing,
    timing_results,
    upload,
    why,
)


def guarded(panel, *args) -> None:
    """Draw a panel; a bad value shows as a message, never as a traceback."""
    try:
        panel(*args)
    except (ValueError, TypeError, MemoryError) as e:
        st.error(f"{type(e).__name__}: {e}")


st.set_page_config(page_title="attnviz: streaming attention, tile by tile", page_icon="🧮",
                   layout="wide")
machine = cache.warm()
cfg = state.sync_config()
controls, bugs = st.sidebar.container(), st.sidebar.container()
own = upload.render(cfg)  # your own Q, K, V (the sidebar's end): None unless in use
sidebar.render(own.cfg if own else cfg, controls, sizes_from_arrays=own is not None)
buglab.sidebar(cfg, bugs)
cfg = own.cfg if own else cfg
stepper.render_speed()

st.title("Streaming attention, tile by tile")
st.markdown(
    "Attention computes, for every query row, softmax(q·Kᵀ/√D)·V. The standard way builds the "
    "whole score matrix S first. **Block-wise streaming** (FlashAttention's tiling with an "
    "*online softmax*) instead walks S one tile at a time and keeps, per query row, only a "
    "running max **m**, a running denominator **l** and an unnormalized output: whenever a "
    "new tile raises the max, the old sums are rescaled by **alpha = exp(m_old − m_new)**. "
    "The result is exact, and S never exists in memory. Step through it below.")
try:
    head = own.traced() if own else cache.traced_head(cfg)
except (ValueError, TypeError, MemoryError) as e:
    st.error(f"This configuration cannot be traced: {e}")
    st.stop()
stepper.clamp_cursor(head.trace, cfg)
for note in state.notices(cfg):
    st.warning(note, icon="⚠️")
guarded(buglab.banner, head, cfg)


def step_panels() -> None:
    trace = head.trace
    n = st.session_state[state.STEP]
    r = detail.current_row(trace, n)
    # every image first, so the panels below reach the browser together (one re-render)
    figs = figures.build(head, n, r, bool(st.session_state.get(state.ALL_ROWS)))
    stepper.render(trace)
    buglab.step_note(head, n)
    quiz.render(head, n, r - trace.config.rows(trace.steps[n].i)[0])
    left, right = st.columns([5, 6], gap="large")
    with left:
        tilemap.render(trace, figs.tile_map)
    with right:
        detail.render_tiles(trace, cfg, n, figs)
    left, right = st.columns([5, 6], gap="large")
    with left:
        detail.render_row(trace, n, r, figs)
    with right:
        detail.render_math(trace, n, r)
    why.render(head, n, r)
    detail.render_output(head, n, figs)
    share.render(head, cfg, n, r)
    state.write_url(cfg, n, st.session_state[state.ROW])


@st.fragment
def step_view() -> None:
    guarded(step_panels)


step_view()

st.divider()
# Only the open tab is drawn: every element on the page costs the browser time on each
# step click, even outside the step view (the closed tab's ~40 ms per click, measured).
memory_tab, timing_tab, splitkv_tab, numerics_tab, backward_tab = st.tabs(
    ["Memory", "Timing", "Split-KV decode", "Numerics", "Backward"], key=state.PANEL,
    on_change="rerun")
if memory_tab.open:
    with memory_tab:
        guarded(memory.render, cfg, machine["threads"], timing_results.measured_peaks())
if timing_tab.open:
    with timing_tab:
        guarded(timing.render, cfg, machine)
if splitkv_tab.open:
    with splitkv_tab:
        guarded(splitkv.render, cfg, own)
if numerics_tab.open:
    with numerics_tab:
        guarded(numerics.render)
if backward_tab.open:
    with backward_tab:
        guarded(backward.render, cfg, machine["threads"])
