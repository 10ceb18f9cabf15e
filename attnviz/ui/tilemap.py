"""The tile map panel: which tiles the mask skips, which were visited, where we are.

The map is a PNG from ``images.tile_map`` shown by a tiny custom component (Streamlit's
components v2: a few lines of inline JavaScript, no bundle). A click on the grid sends the
tile as the trigger value ``tile = [n, i, j]`` (n = -1 for a skipped tile); ``_on_click``
turns it into the step cursor before the rerun. The component also writes the hovered
tile's class and step into the image's tooltip, and exposes the outlined tile
(``data-current="i,j"``) and the grid's box and size (``data-grid``, ``data-tr``,
``data-tc``) on the ``<img>``, for the browser tests.
"""
from __future__ import annotations

import streamlit as st

from .. import images
from ..masks import row_spans
from ..stats import tile_work
from ..trace import Trace
from . import component, state
from .text import heading

KEY = "tilemap"
_SKIPPED_CLICK = "_tilemap_skipped"

_component = component.boxed(
    "tilemap", "tile-map",
    html='<img class="tilemap" style="width: 100%; display: block">',
    update="""const img = box.querySelector("img.tilemap");
  img.src = data.src;
  img.alt = data.alt;
  img.style.maxWidth = data.width + "px";
  img.dataset.current = data.current.join(",");
  img.dataset.grid = data.grid.join(",");
  img.dataset.tr = data.Tr;
  img.dataset.tc = data.Tc;
  const [gx0, gy0, gx1, gy1] = data.grid;
  const tileAt = (e) => {
    const r = img.getBoundingClientRect();
    const fx = (e.clientX - r.left) / r.width, fy = (e.clientY - r.top) / r.height;
    const j = Math.floor((fx - gx0) / (gx1 - gx0) * data.Tc);
    const i = Math.floor((fy - gy0) / (gy1 - gy0) * data.Tr);
    return i >= 0 && i < data.Tr && j >= 0 && j < data.Tc ? [i, j] : null;
  };
  img.onclick = (e) => {
    const t = tileAt(e);
    if (t) setTriggerValue("tile", [data.steps[t[0] * data.Tc + t[1]], t[0], t[1]]);
  };
  img.onmousemove = (e) => {
    const t = tileAt(e);
    img.style.cursor = t ? "pointer" : "default";
    if (!t) { img.title = ""; return; }
    const [i, j] = t, k = i * data.Tc + j, n = data.steps[k];
    const r0 = i * data.Br, r1 = Math.min(r0 + data.Br, data.Lq) - 1;
    const k0 = j * data.Bc, k1 = Math.min(k0 + data.Bc, data.Lk) - 1;
    img.title = `Q block ${i} (rows ${r0}-${r1}) x KV block ${j} (keys ${k0}-${k1}): ` +
      data.names[data.status[k]] + (n >= 0 ? `, step ${n + 1}` : ", not computed");
  };""")


def component_data(trace: Trace, n: int) -> dict:
    """What the component draws and needs to map a click: the PNG, the grid's box as
    fractions of the image, the outlined tile, and each tile's class and step (-1: none)."""
    c = trace.config
    fig = images.tile_map(trace, n)
    steps = [-1] * (c.Tr * c.Tc)
    for s in trace.steps:
        steps[s.i * c.Tc + s.j] = s.n
    names = list(images.STATUS_CODE)
    return {
        "src": fig.data_url(),
        "alt": fig.alt,
        "width": fig.width, "grid": fig.meta["grid"], "current": fig.meta["current"],
        "Tr": c.Tr, "Tc": c.Tc, "Br": c.Br, "Bc": c.Bc, "Lq": c.Lq, "Lk": c.Lk,
        "names": names, "status": [images.STATUS_CODE[x] for x in trace.tile_status.ravel()],
        "steps": steps,
    }


def skipped_reason(trace: Trace, i: int, j: int) -> str:
    """Why tile (i, j) has no step, in the numbers of the mask: its keys lie after what
    every row of Q block i may see (the causal future), before it (outside the window), or
    each row misses them one way or the other."""
    c, m = trace.config, trace.config.mask
    (i0, i1), (k0, k1) = c.rows(i), c.keys(j)
    lo, hi = row_spans(c.Lq, c.Lk, causal=m.causal, q_offset=m.q_offset, window=m.window)
    lo, hi = lo[i0:i1], hi[i0:i1]
    p0, p1 = i0 + m.q_offset, i1 - 1 + m.q_offset
    rows = f"row {i0}" if i1 - i0 == 1 else f"rows {i0}–{i1 - 1}"
    place = (f"at position {p0}" if p0 == p1 else f"at positions {p0}–{p1}")
    head = (f"Tile ({i}, {j}) is skipped, so it has no step. Q block {i} holds query {rows} "
            f"({place}); KV block {j} holds keys {k0}–{k1 - 1}. ")
    if k0 >= hi.max():
        last = "its row sees" if i1 - i0 == 1 else "even its last row sees"
        return head + (f"Every key in it lies in the future of every row of Q block {i}: "
                       f"{last} keys up to {int(hi.max()) - 1} only (causal mask).")
    if k1 <= lo.min():
        first = "its row" if i1 - i0 == 1 else "even its first row"
        return head + (f"Every key in it is older than the window of every row of Q block "
                       f"{i}: {first} sees keys from {int(lo.min())} on (window of "
                       f"{m.window} keys).")
    return head + (f"Each row of Q block {i} misses all of them: for some rows they lie in "
                   f"the future, for the others they are older than the window of "
                   f"{m.window} keys.")


def clicked_step(value) -> tuple[int, int, int] | None:
    """(n, i, j) of a click's trigger value ``[n, i, j]`` (n = -1: a skipped tile), or None."""
    try:
        n, i, j = (int(x) for x in value)
    except (TypeError, ValueError):
        return None
    return n, i, j


def _on_click() -> None:
    hit = clicked_step((st.session_state.get(KEY) or {}).get("tile"))
    if hit is None:
        return
    n, i, j = hit
    if n < 0:
        st.session_state[_SKIPPED_CLICK] = (i, j)
        return
    st.session_state[state.STEP] = n
    st.session_state.pop(_SKIPPED_CLICK, None)
    state.navigated()


def render(trace: Trace, data: dict) -> None:
    """The panel; ``data`` is ``component_data`` of the current step, drawn beforehand."""
    w = tile_work(trace)
    heading(
        "Tile map",
        "Each cell is one tile: a Q block i (rows of queries) against a KV block j (a run of "
        "keys). **Skipped** tiles hold no visible key, so they are never computed; **full** "
        "tiles need no mask; **partial** tiles straddle the diagonal or the window edge and "
        "mask some scores. The loop visits each row of tiles left to right. Click a tile "
        "to jump to its step.",
        f"**{w.full + w.partial}** of {w.tiles} tiles computed "
        f"(**{100 * (w.full + w.partial) / w.tiles:.1f}%**: {w.full} full, {w.partial} "
        f"partial), **{w.skipped}** skipped: the mask saved **{100 * w.saved_fraction:.1f}%** "
        f"of the score matrix; {100 * w.wasted_fraction:.1f}% of the computed scores were "
        "masked inside partial tiles.")
    _component(key=KEY, data=data, on_tile_change=_on_click)
    skipped = st.session_state.pop(_SKIPPED_CLICK, None)
    if skipped and skipped[0] < trace.config.Tr and skipped[1] < trace.config.Tc:
        st.info(skipped_reason(trace, *skipped), icon=":material/block:")
