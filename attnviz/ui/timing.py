"""The timing panel: standard vs streaming on the real kernels, on request only.

Three buttons, each running ``attnviz.timing`` (warm-up excluded, median of the chosen
number of runs): the current configuration; a sweep over L that draws the crossover; a sweep
over (Q block, KV block). Sweeps store each point in session state as it arrives and draw a
progress bar; the Cancel button interrupts them (any click reruns the script, which stops
the running loop at its next progress update) and the points so far stay on screen.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import psutil
import streamlit as st

from kernels import default_blocks

from .. import plots
from ..timing import Problem, budget_refusal, compare, inputs_for, sweep_blocks, sweep_lengths
from ..viewconfig import ViewConfig
from . import state

REPEATS = (3, 5, 7)
SWEEP_MAX = (1024, 2048, 4096, 8192, 16384, 32768)
SWEEP_BRS = (16, 32, 64, 128)
SWEEP_BCS = (32, 64, 128, 256)
_RESULT, _SWEEP, _BLOCKS = "timing_result", "timing_sweep", "timing_block_sweep"


BLOCK_CHOICES = {"kernel": "the kernel's defaults for this D (tuned)",
                 "stepper": "the stepper's Br x Bc"}


def problem(cfg: ViewConfig, L: int | None = None, blocks: str = "kernel") -> Problem:
    """The configuration as one kernel call; ``L`` replaces the sequence length (sweeps);
    ``blocks``: "kernel" (None: the kernel's tuned defaults) or "stepper" (cfg.Br x cfg.Bc)."""
    Lq, Lk = cfg.Lq, cfg.Lk
    if L is not None:
        Lq, Lk = {"prefill": (L, L), "chunked": (min(cfg.chunk, L - 1), L),
                  "decode": (1, L)}[cfg.mode]
    Br, Bc = (cfg.Br, cfg.Bc) if blocks == "stepper" else (None, None)
    return Problem(cfg.B, cfg.Hq, cfg.Hkv, Lq, Lk, cfg.D, causal=cfg.causal,
                   q_offset=cfg.q_offset, window=cfg.window, Br=Br, Bc=Bc,
                   sinks=cfg.sinks if cfg.mask == "sinks" else 0,
                   prefix=cfg.prefix if cfg.mask == "prefix" else 0,
                   docs=cfg.docs if cfg.mask == "docs" else 0, sink_logit=cfg.sink_logit)


def _blocks_used(p: Problem) -> str:
    Br, Bc = (p.Br, p.Bc) if p.Br else default_blocks(p.D)
    return f"{Br} x {Bc}" + ("" if p.Br else " (kernel default)")


def sweep_Ls(cfg: ViewConfig, L_max: int) -> list[int]:
    Ls = [2**k for k in range(8, int(math.log2(L_max)) + 1)]
    return [L for L in Ls if cfg.mode != "chunked" or L > cfg.chunk]


def _pause() -> None:
    st.session_state[state.PLAYING] = False


def _ms(s: float | None) -> str:
    return "–" if s is None else f"{1e3 * s:.3g} ms"


def _run_table(res: dict) -> pd.DataFrame:
    return pd.DataFrame([{
        "method": r.method,
        "median": _ms(r.median_s),
        "GFLOP/s": "–" if r.gflops is None else f"{r.gflops:.3g}",
        "peak extra memory": "–" if r.peak_bytes is None else plots.bytes_label(r.peak_bytes),
        "runs": ", ".join(_ms(t) for t in r.times) or (r.skipped or ""),
    } for r in (res["standard"], res["streaming"])])


def _current(cfg: ViewConfig, machine: dict) -> None:
    blocks = st.radio("Streaming blocks", list(BLOCK_CHOICES), format_func=BLOCK_CHOICES.get,
                      key="timing_blocks", horizontal=True)
    c1, c2 = st.columns([1, 3], vertical_alignment="bottom")
    repeats = c1.selectbox("Timed runs (median)", REPEATS, key="timing_repeats")
    run = c2.button("Time standard vs streaming for this configuration", key="run_timing",
                    icon=":material/timer:", on_click=_pause, type="primary")
    p = problem(cfg, blocks=blocks)
    if run:
        with st.spinner(f"Timing B={p.B}, Hq={p.Hq}, Lq={p.Lq}, Lk={p.Lk}, D={p.D} ..."):
            q, k, v = inputs_for(p, cfg.scenario, cfg.seed)
            res = compare(p, q, k, v, repeats=repeats, ram=psutil.virtual_memory().total)
        st.session_state[_RESULT] = {"cfg": cfg, "problem": p, "res": res}
    got = st.session_state.get(_RESULT)
    if not got:
        return
    if got["cfg"] != cfg:
        st.caption("These results are for an earlier configuration: "
                   f"{got['cfg'].describe()}, B={got['problem'].B}, Hq={got['problem'].Hq}.")
    res = got["res"]
    st.table(_run_table(res), hide_index=True)
    gp = got["problem"]
    if res["max_abs_diff"] is not None:
        st.caption(f"max |O_standard − O_streaming| = {res['max_abs_diff']:.2e} over all "
                   f"B·Hq·Lq·D = {gp.B * gp.Hq * gp.Lq * gp.D} outputs; "
                   f"{res['flops'] / 1e9:.3g} GFLOP per call (4·D per visible pair); "
                   f"streaming blocks {_blocks_used(gp)}.")
    st.caption(f"Threads: {machine['threads']} ({machine['threading layer']}); tile GEMMs: "
               f"{machine['blas']}; dtype: {machine['dtype']}. Peak extra memory: resident "
               "memory above the level before the warm-up call, for the whole server process; "
               "an allocation served from memory the process already held shows as 0.")


def _sweep(cfg: ViewConfig) -> None:
    st.markdown("##### Sweep over L: where does streaming overtake standard?")
    c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    L_max = c1.select_slider("Largest L", SWEEP_MAX, value=4096, key="sweep_Lmax")
    run = c2.button("Run the sweep", key="run_sweep", on_click=_pause)
    Ls = sweep_Ls(cfg, L_max)
    if run:
        blocks = st.session_state.get("timing_blocks", "kernel")
        st.session_state[_SWEEP] = {"cfg": cfg, "rows": [], "done": False, "blocks": blocks}
        cancel = c3.empty()
        cancel.button("Cancel", key="cancel_sweep")  # its click reruns: the loop stops
        bar = st.progress(0.0, text="starting...")
        rows = st.session_state[_SWEEP]["rows"]
        for k, row in enumerate(sweep_lengths(
                lambda L: problem(cfg, L, blocks), Ls, scenario=cfg.scenario, seed=cfg.seed,
                repeats=st.session_state.get("timing_repeats", 3),
                ram=psutil.virtual_memory().total)):
            rows.append(row)
            bar.progress((k + 1) / len(Ls), text=f"L = {row['L']} done ({k + 1}/{len(Ls)})")
        st.session_state[_SWEEP]["done"] = True
        bar.empty()
        cancel.empty()
    got = st.session_state.get(_SWEEP)
    if not got or not got["rows"]:
        return
    if not got["done"]:
        st.warning(f"Sweep cancelled after {len(got['rows'])} of its lengths; showing those.")
    first = problem(got["cfg"], got["rows"][0]["L"], got["blocks"])
    st.caption(f"Streaming blocks: {_blocks_used(first)}.")
    st.plotly_chart(plots.crossover_chart(got["rows"]), theme=None, key="crossover_chart")
    for m in ("standard", "streaming"):
        for note in sorted({r[f"{m}_skipped"] for r in got["rows"] if r[f"{m}_skipped"]}):
            Ls_skipped = [r["L"] for r in got["rows"] if r[f"{m}_skipped"] == note]
            st.caption(f"{m} not run at L = {', '.join(map(str, Ls_skipped))}: {note}")


def _blocks(cfg: ViewConfig) -> None:
    st.markdown("##### Block sizes: streaming GFLOP/s over (Q block, KV block)")
    p = problem(cfg)
    run = st.button(f"Sweep {len(SWEEP_BRS) * len(SWEEP_BCS)} block sizes for this "
                    "configuration", key="run_blocks", on_click=_pause)
    refusal = budget_refusal(p)
    if run and refusal:
        st.error(f"Not timed: {refusal}.")
    elif run:
        g = np.full((len(SWEEP_BRS), len(SWEEP_BCS)), np.nan)
        st.session_state[_BLOCKS] = {"cfg": cfg, "gflops": g, "done": False}
        cancel = st.empty()
        cancel.button("Cancel", key="cancel_blocks")  # its click reruns: the loop stops
        bar = st.progress(0.0, text="starting...")
        q, k, v = inputs_for(p, cfg.scenario, cfg.seed)
        total = g.size
        for done, (a, b, r) in enumerate(sweep_blocks(
                p, q, k, v, SWEEP_BRS, SWEEP_BCS,
                repeats=st.session_state.get("timing_repeats", 3)), start=1):
            g[a, b] = r.gflops
            bar.progress(done / total, text=f"Br={SWEEP_BRS[a]}, Bc={SWEEP_BCS[b]}: "
                                            f"{r.gflops:.3g} GFLOP/s ({done}/{total})")
        st.session_state[_BLOCKS]["done"] = True
        bar.empty()
        cancel.empty()
    got = st.session_state.get(_BLOCKS)
    if not got:
        return
    if not got["done"]:
        st.warning("Block sweep cancelled; showing the sizes measured so far.")
    st.plotly_chart(plots.block_sweep_chart(list(SWEEP_BRS), list(SWEEP_BCS), got["gflops"]),
                    theme=None, key="block_sweep_chart")


def measured_peaks() -> dict[str, tuple[int, int]]:
    """name -> (Lk, peak extra bytes) from the last timing of the current section."""
    got = st.session_state.get(_RESULT)
    out = {}
    if got:
        for m in ("standard", "streaming"):
            r = got["res"][m]
            if r.peak_bytes is not None:
                out[m] = (got["problem"].Lk, r.peak_bytes)
    return out


def render(cfg: ViewConfig, machine: dict) -> None:
    st.markdown("#### Timing: the same Numba kernels, live")
    st.caption(
        "Standard attention computes all of S = QKᵀ, a softmax over it, then P·V; "
        "streaming computes the same result tile by tile (the tiles above) in parallel over "
        "(batch, head, Q block). Both skip nothing the mask lets through; GFLOP/s counts "
        "4·D FLOPs per visible (query, key) pair for both. Two warm-up calls are not timed. "
        "Runs only when you press a button; the machine is shared, so expect ±20%.")
    _current(cfg, machine)
    _sweep(cfg)
    _blocks(cfg)
