"""The Backward tab: FlashAttention-2's backward pass, tile by tile, in its own loop order.

The sidebar's configuration (sizes, blocks, mask, scenario, seed; Hq / Hkv for the GQA
group, at most ``MAX_GROUP`` heads) with L capped at ``MAX_L`` so the trace stays small; dO
is random from the seed. Its own step control (slider + Prev/Next); for the current tile
the recomputed P (against the forward's P~ / l), dP, D, dS and the dV, dK, dQ accumulators,
the live math of one entry, and FLOPs and memory against the forward and against a backward
that stores P.
"""
from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import streamlit as st

from .. import backward_images
from ..backward_math import tile_math
from ..backward_trace import BackwardTrace, memory, run_backward_trace, step_flops, total_flops
from ..plots import bytes_label
from ..scenarios import generate
from ..trace import step_label
from ..viewconfig import ViewConfig, clamp
from . import mathpanel
from .text import aside, heading

MAX_L = 256  # queries and keys of the traced backward
MAX_GROUP = 4  # query heads of the GQA group traced
MAX_STEPS = 4096  # Tr * Tc * heads
STEP, ROW, KEY = "bwd_step", "bwd_row", "bwd_key"  # the step 0-based, as in the trace
SLIDER = "bwd_slider"  # the slider counts from 1, as the heading does
_lock = threading.Lock()  # one trace build at a time (they run on the GIL anyway)


def bounded(cfg: ViewConfig) -> tuple[ViewConfig, int, list[str]]:
    """The configuration with L capped at MAX_L, the group size, and what was changed."""
    notes = []
    if cfg.Lk > MAX_L:
        chunk = min(cfg.chunk, MAX_L // 2)
        small = {"prefill": {"L": MAX_L}, "chunked": {"chunk": chunk, "cache": MAX_L - chunk},
                 "decode": {"cache": MAX_L - 1}}[cfg.mode]
        raw = {**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__}, **small}
        cfg, _ = clamp(raw)
        notes.append(f"The backward trace keeps every tile of every step, so it is limited to "
                     f"{MAX_L} keys: traced with Lq = {cfg.Lq}, Lk = {cfg.Lk}.")
    g = cfg.Hq // cfg.Hkv
    if g > MAX_GROUP:
        notes.append(f"The GQA group has {g} query heads; the first {MAX_GROUP} are traced.")
    return cfg, min(g, MAX_GROUP), notes


@st.cache_resource(max_entries=4, show_spinner="Tracing the backward pass, tile by tile...")
def traced(cfg: ViewConfig, g: int) -> BackwardTrace:
    """The shared trace (never mutated) of KV head 0 and its first g query heads."""
    with _lock:
        q, k, v = generate(cfg.scenario, cfg.Lq, cfg.Lk, cfg.D, B=1, Hq=g, Hkv=1,
                           seed=cfg.seed)
        dout = np.random.default_rng(cfg.seed + 1).standard_normal(q[0].shape)
        return run_backward_trace(q[0], k[0, 0], v[0, 0], dout.astype(np.float32),
                                  q_block=cfg.Br, kv_block=cfg.Bc, **cfg.mask_kwargs())


def _go(to: int, last: int) -> None:
    st.session_state[STEP] = min(max(to, 0), last)


def _slid() -> None:
    st.session_state[STEP] = int(st.session_state[SLIDER]) - 1


def _controls(last: int) -> int:
    ss = st.session_state
    ss[STEP] = min(max(int(ss.get(STEP, 0)), 0), last)
    n = ss[STEP]
    ss[SLIDER] = n + 1
    row = st.container(horizontal=True, vertical_alignment="bottom")
    row.button("Prev", key="bwd_prev", icon=":material/chevron_left:", on_click=_go,
               args=(n - 1, last), disabled=n == 0)
    row.button("Next", key="bwd_next", icon=":material/chevron_right:", on_click=_go,
               args=(n + 1, last), disabled=n == last)
    if last > 0:
        row.slider("Backward step (visit order: KV block j outer)", 1, last + 1, key=SLIDER,
                   on_change=_slid)
    return ss[STEP]


def _offset(key: str, size: int, default: int = 0) -> int:
    ss = st.session_state
    ss[key] = min(max(int(ss.get(key, default)), 0), size - 1)
    return ss[key]


def render(cfg: ViewConfig, threads: int) -> None:
    cfg, g, notes = bounded(cfg)
    heading("Backward: the gradients, tile by tile (FlashAttention-2)",
            "Training needs dQ, dK, dV from dO, the gradient of the loss with respect to the "
            "output. The forward kept only O and each row's LSE = m + log l, not P: the "
            "backward recomputes every tile's scores S and gets P = exp(S − LSE) directly, "
            "already normalized. With D = rowsum(dO∘O) per row, dS = P∘(dP − D) is the "
            "softmax's gradient. The loop runs KV blocks j outside, so dK_j and dV_j "
            "accumulate in one task; dQ_i gathers a term from every KV block (the kernel "
            "keeps one dQ copy per thread and adds them up at the end).")
    for note in notes:
        st.info(note, icon="ℹ️")
    st.markdown(aside(
        f"Inputs: the sidebar's scenario “{cfg.scenario}” (seed {cfg.seed}; uploaded arrays "
        f"are not used here), KV head 0 and its first {g} query head(s); dO is random from "
        f"the seed. {cfg.describe()}."))
    if cfg.Tr * cfg.Tc * g > MAX_STEPS:  # checked before tracing: a trace keeps every tile
        st.info(f"{cfg.Tr} × {cfg.Tc} tiles × {g} head(s) = {cfg.Tr * cfg.Tc * g} tiles: "
                f"choose larger blocks Br, Bc (the backward trace holds at most {MAX_STEPS}).")
        return
    trace = traced(cfg, g)
    c = trace.config
    if not trace.steps:
        st.info("This mask leaves no tile to compute.")
        return
    n = _controls(len(trace.steps) - 1)
    s = trace.steps[n]
    (i0, i1), (k0, k1) = c.rows(s.i), c.keys(s.j)
    heading(f"Backward step {step_label(n)} of {len(trace.steps)}: KV block {s.j} "
            f"(keys {k0}–{k1 - 1}) × Q block {s.i} (rows {i0}–{i1 - 1}), query head {s.h} "
            f"of {trace.group}, {s.kind}")
    # the two figures side by side need more than the page's width: columns in proportion
    # to their widths, each image scaled to its column (at its own width the tile map
    # spilled under the heatmaps and the text beside them)
    tile_map, tiles = backward_images.tile_map(trace, n), backward_images.step_tiles(trace, n)
    left, right = st.columns([tile_map.width, tiles.width], gap="small")
    with left, st.container(key="bwd_tile_map"):
        st.image(tile_map.data_url(), width="stretch", alt=tile_map.alt, caption=aside(
            "Shaded: tiles this head's backward has computed so far. Each column (KV "
            "block) is finished before the next: its dK_j, dV_j are then final."))
    with right, st.container(key="bwd_tiles"):
        st.image(tiles.data_url(), width="stretch", alt=tiles.alt)
    # below both columns, full width: beside the heatmaps it ran into the tile map
    err = float(np.nanmax(np.abs(s.P - s.P_fwd))) if s.P.size else 0.0
    st.markdown(aside(
        f"P recomputed from the saved LSE equals the forward's P~ / l = exp(S − m) / l "
        f"(its final m and l per row): max |P − P~/l| = **{err:.2e}** on this tile "
        f"(float32 rounding)."))
    fig = backward_images.accumulators(trace, n)
    with st.container(key="bwd_acc"):
        st.image(fig.data_url(), width=fig.width, alt=fig.alt)
    left, right = st.columns([4, 7], gap="large")
    with left:
        _row_table(trace, n)
        _costs(trace, n, threads)
    with right:
        a = _offset(ROW, i1 - i0, default=i1 - i0 - 1)  # the last row sees the most keys
        b = _offset(KEY, k1 - k0)
        with st.container(horizontal=True):
            st.number_input(f"Row within the tile (0 – {i1 - i0 - 1})", 0, i1 - i0 - 1,
                            key=ROW)
            st.number_input(f"Key within the tile (0 – {k1 - k0 - 1})", 0, k1 - k0 - 1,
                            key=KEY)
        tm = tile_math(trace, n, i0 + a, k0 + b)
        heading(f"Live math: row {i0 + a}, key {k0 + b}, step {step_label(n)}",
                "This step's numbers for one entry of the tile, as the kernel's tile routine "
                "computed them; σ is the softmax scale 1/√D. The accumulators are vectors of "
                "D numbers: their norms before and after this tile.")
        note = ("P~ / l uses the forward's final m and l of the row (computed in float64): "
                "the same number as P, up to float32 rounding." if not tm.masked else
                "This entry is masked: P = 0, so dS = 0 and it adds nothing to any gradient.")
        if tm.rounding_note:
            note = f"{tm.rounding_note} {note}"
        mathpanel.render(tm, note, key="bwd_math")


def _row_table(trace: BackwardTrace, n: int) -> None:
    s, c = trace.steps[n], trace.config
    i0, i1 = c.rows(s.i)
    rows = np.arange(i0, i1)
    gap = np.abs(s.P - s.P_fwd).max(axis=1) if s.P.size else np.zeros(len(rows))
    st.markdown(aside("Each row of the tile: the forward's LSE, D = rowsum(dO∘O), and how far "
                      "the recomputed P is from the forward's P~ / l."))
    st.dataframe(pd.DataFrame({"row": rows, "LSE": trace.lse[s.h, i0:i1],
                               "D": trace.D[s.h, i0:i1],
                               "max |P − P~/l|": [f"{x:.2e}" for x in gap]}),
                 hide_index=True, key="bwd_rows", height=min(35 * (len(rows) + 1) + 3, 300))


def _costs(trace: BackwardTrace, n: int, threads: int) -> None:
    c = trace.config
    bwd, fwd = step_flops(trace.steps[n], c.D)
    tb, tf = total_flops(trace)
    mem = memory(c, trace.group, threads)
    heading("Work and memory",
            "The forward does 2 GEMMs per tile (S = QKᵀ, then P~V). The backward does 5: "
            "S = QKᵀ again, because S was never stored, then dP = dO·Vᵀ, dV += Pᵀ·dO, "
            "dK += σ·dSᵀ·Q and dQ += σ·dS·K: 2.5× the forward's FLOPs.",
            f"This tile: **{bwd:,}** FLOPs backward vs {fwd:,} forward. All {len(trace.steps)} "
            f"tiles ({trace.group} head(s)): **{tb:,}** vs {tf:,} = **{tb / tf:.2f}×**.",
            f"Extra memory beyond inputs and outputs, {trace.group} head(s) of {c.Lq} × "
            f"{c.Lk}: streaming backward **{bytes_label(mem.streaming)}** (four Br×Bc tiles "
            f"per thread × {threads} threads, D per row, {threads - 1} extra dQ copies); a "
            f"backward that stores P (and dS) **{bytes_label(mem.stores_P)}**, growing with "
            f"Lq·Lk.")

