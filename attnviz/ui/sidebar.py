"""The sidebar: every control of the configuration, bounded, with a line on what it does.

Widgets take their values from session state (``state.sync_config`` has clamped them), so
none passes ``value=``. The number fields have no min/max of their own: a value typed out of
range then reaches the clamping, which corrects it with the same notice as a URL value (a
field with a max only turned red and kept the old value, silently).
"""
from __future__ import annotations

import streamlit as st

from ..presets import PRESETS
from ..scenarios import SCENARIOS
from ..viewconfig import (
    ALIGNS,
    BLOCK_OPTIONS,
    D_OPTIONS,
    MASKS,
    MAX_TRACE_LEN,
    MODES,
    ViewConfig,
)
from . import state


def _load_preset() -> None:
    name = st.session_state.get("preset")
    if name:
        state.apply_preset(name)
    st.session_state["preset"] = None  # back to the placeholder: presets are loaders


def render(cfg: ViewConfig, sb=None, sizes_from_arrays: bool = False) -> None:
    """The controls, in ``sb`` (a sidebar container; default the sidebar). With
    ``sizes_from_arrays`` (your own Q, K, V in use, ``cfg`` their view) the sizes, D and
    heads are your arrays': named instead of offered, so no control shows a size not in use
    (their widgets keep their values, ``state.sync_config`` writes them back every run)."""
    sb = sb or st.sidebar
    sb.title("attnviz")
    sb.caption("Block-wise streaming attention (FlashAttention-style tiling with online "
               "softmax), tile by tile, on the real Numba kernels.")
    sb.selectbox("Preset", list(PRESETS), index=None, key="preset",
                 placeholder="Load a preset...", on_change=_load_preset,
                 help="Named starting points; loading one sets every control below.")
    # (with your arrays in use cfg is their view: the preset's sentence waits for the controls)
    loaded = None if sizes_from_arrays else st.session_state.get("loaded_preset")
    if loaded and PRESETS[loaded].config != cfg:  # its sentence may no longer hold
        st.session_state.pop("loaded_preset")
    elif loaded:
        sb.caption(f"Loaded **{loaded}**: {PRESETS[loaded].about}")

    sb.subheader("Sequence")
    if sizes_from_arrays:
        sb.info(f"Sizes from your arrays (below): {MODES[cfg.mode]}, Lq = {cfg.Lq}, "
                f"Lk = {cfg.Lk}, D = {cfg.D}, B = {cfg.B}, Hq = {cfg.Hq}, Hkv = {cfg.Hkv}. "
                "Turn off \"Step through my arrays\" to set them here.",
                icon=":material/upload:")
    else:
        _sizes(sb, cfg)
    if cfg.mode == "chunked" and cfg.causal:
        sb.radio("Causal diagonal", list(ALIGNS), format_func=ALIGNS.get, key="align",
                 help="Where query row 0 sits. Bottom-right: after the cache (what a KV cache "
                      "needs). Top-left: at position 0, PyTorch's is_causal=True, which "
                      "hides most of the cache from the new tokens.")
    off = cfg.q_offset if cfg.q_offset is not None else cfg.Lk - cfg.Lq
    rows = "1 query row" if cfg.Lq == 1 else f"{cfg.Lq} query rows"
    keys = "1 key" if cfg.Lk == 1 else f"{cfg.Lk} keys"
    where = ""
    if cfg.mode == "chunked" and cfg.causal:
        where = (f" The causal diagonal sits **{cfg.align}**: row r sees keys up to "
                 f"{off} + r" + (", so most of the cache is hidden from the new tokens."
                                 if cfg.q_offset == 0 else ", the whole cache and itself."))
    sb.caption(f"Lq = {rows}, Lk = {keys}; query row r sits at position {off} + r.{where}")
    if not sizes_from_arrays:
        sb.select_slider("Head dim D", D_OPTIONS, key="D")

    sb.subheader("Tiles")
    if cfg.mode != "decode":
        sb.select_slider("Q block Br (rows per tile)", BLOCK_OPTIONS, key="Br")
    else:  # one query row: Br does not apply (the kernel stacks a KV head's query heads)
        sb.caption("Q block: the single query row (decode has no Q block to choose).")
    sb.select_slider("KV block Bc (keys per tile)", BLOCK_OPTIONS, key="Bc")
    sb.caption(f"Grid: Tr = {cfg.Tr} Q blocks x Tc = {cfg.Tc} KV blocks.")

    sb.subheader("Mask")
    sb.radio("Mask", list(MASKS), format_func=MASKS.get, key="mask",
             label_visibility="collapsed")
    if cfg.mask in ("window", "sinks"):
        sb.number_input("Window W (keys each query sees)", step=16, key="W")
    if cfg.mask == "sinks":
        sb.number_input("Sinks S (first keys every row sees)", step=1, key="sinks",
                        help="StreamingLLM: a row at position p sees keys [0, S) and "
                             "[p - W + 1, p], causally.")
    if cfg.mask == "docs":
        sb.number_input("Packed documents", step=1, key="docs",
                        help="Documents of equal length packed into one sequence: a query "
                             "sees only keys of its own document, causally.")
    if cfg.mask == "prefix":
        sb.number_input("Prefix P", step=16, key="prefix",
                        help="Prefix-LM: positions below P see the whole prefix [0, P); later "
                             "positions are causal.")
    sb.number_input("Sink logit s (empty: none)", step=0.5,
                    value=None, key="sink_logit", placeholder="none",  # clearable: None
                    help="gpt-oss: one extra logit per head in every row's softmax, adding "
                         "nothing to the output. In the online softmax it is the initial "
                         "state m = s, l = 1, acc = 0; a row that sees no key gets O = 0, "
                         "LSE = s.")
    if cfg.sink_logit is not None:
        sb.caption(f"Every row starts from m = {cfg.sink_logit:g}, l = 1, acc = 0 (not -inf, 0, "
                   "0): the sink is already in the denominator before the first tile.")

    if sizes_from_arrays:  # the inputs and heads are your arrays', named above
        return
    sb.subheader("Inputs")
    sb.selectbox("Scenario", list(SCENARIOS), format_func=lambda s: SCENARIOS[s].label,
                 key="scenario")
    sb.caption("Watch: " + SCENARIOS[cfg.scenario].what_to_watch)
    sb.number_input("Seed", step=1, key="seed")

    sb.subheader("Batch and heads")
    sb.caption("For the memory and timing panels; the stepper traces head 0.")
    c1, c2, c3 = sb.columns(3)
    c1.number_input("B", step=1, key="B")
    c2.number_input("Hq", step=1, key="Hq")
    c3.number_input("Hkv", step=1, key="Hkv")
    if cfg.Hq != cfg.Hkv:
        sb.caption(f"GQA: each KV head serves {cfg.Hq // cfg.Hkv} query heads "
                   f"(query head h reads KV head h // {cfg.Hq // cfg.Hkv}).")


def _sizes(sb, cfg: ViewConfig) -> None:
    """Mode and lengths: L in prefill, the chunk and the cache otherwise."""
    sb.radio("Mode", list(MODES), format_func=MODES.get, key="mode",
             help="Prefill: a prompt attends to itself. Chunked prefill: new tokens attend to "
                  "a KV cache plus themselves. Decode: one new token attends to the cache.")
    if cfg.mode == "prefill":
        sb.number_input("L (= Lq = Lk)", step=32, key="L",
                        help=f"1 to {MAX_TRACE_LEN}; a value outside is clamped, with a notice.")
    else:
        if cfg.mode == "chunked":
            sb.number_input("New tokens (chunk, = Lq)", step=32, key="chunk")
        sb.number_input("Tokens already in the KV cache", step=32, key="cache")
