"""The tile map panel: which tiles the mask skips, which were visited, where we are.

A click on a computed tile jumps to its step: the chart's ``"click"`` trace carries
``customdata = [n, i, j]`` per tile (``plots.tile_map``) and ``on_select`` runs
``_on_click`` before the rerun. The chart's identity changes with its figure (every step),
so a selection never lingers into the next step.
"""
from __future__ import annotations

import streamlit as st

from .. import plots
from ..stats import tile_work
from ..trace import Trace
from . import state

KEY = "tilemap"
_SKIPPED_CLICK = "_tilemap_skipped"


def clicked_step(event) -> tuple[int, int, int] | None:
    """(n, i, j) of the first clicked tile in a plotly selection event, or None."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for p in points:
        data = p.get("customdata")
        if data is not None and len(data) == 3:
            return int(data[0]), int(data[1]), int(data[2])
    return None


def _on_click() -> None:
    hit = clicked_step(st.session_state.get(KEY))
    if hit is None:
        return
    n, i, j = hit
    if n < 0:
        st.session_state[_SKIPPED_CLICK] = (i, j)
        return
    st.session_state[state.STEP] = n
    st.session_state.pop(_SKIPPED_CLICK, None)
    state.navigated()


def render(trace: Trace, n: int) -> None:
    w = tile_work(trace)
    st.markdown("#### Tile map")
    st.caption(
        "Each cell is one tile: a Q block i (rows of queries) against a KV block j (a run of "
        "keys). **Skipped** tiles hold no visible key, so they are never computed; **full** "
        "tiles need no mask; **partial** tiles straddle the diagonal or the window edge and "
        "mask some scores. The loop visits each row of tiles left to right. Click a tile "
        "to jump to its step.")
    st.markdown(
        f"**{w.full + w.partial}** of {w.tiles} tiles computed ({w.full} full, {w.partial} "
        f"partial), **{w.skipped}** skipped: the mask saved **{100 * w.saved_fraction:.1f}%** "
        f"of the score matrix; {100 * w.wasted_fraction:.1f}% of the computed scores were "
        "masked inside partial tiles.")
    st.plotly_chart(plots.tile_map(trace, n), theme=None, key=KEY, on_select=_on_click,
                    selection_mode="points", config={"displayModeBar": False})
    skipped = st.session_state.pop(_SKIPPED_CLICK, None)
    if skipped:
        st.info(f"Tile (Q block {skipped[0]}, KV block {skipped[1]}) is skipped: no query of "
                "that block sees any of its keys, so it has no step.")
