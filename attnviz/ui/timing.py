"""The timing panel: standard vs streaming on the real kernels, on request only, off the
script thread.

Three buttons, each handing one job to the process's timing queue (``timing_jobs``): the
current configuration (times, then each method's peak memory in a fresh process); a sweep
over L (the crossover, a roofline under the same run's roofs, a sentence on why the winner
wins); a sweep over (Q block, KV block). Their results are drawn by ``timing_results``. A
configuration over the budget is refused from its shapes alone, before any array is built.
"""
from __future__ import annotations

import psutil
import streamlit as st

from ..timed_call import problem, sweep_Ls
from ..timing import Problem, refusal
from ..viewconfig import ViewConfig
from . import timing_jobs as jobs
from . import timing_results

REPEATS = (3, 5, 7)
SWEEP_MAX = (1024, 2048, 4096, 8192, 16384, 32768)
BLOCK_CHOICES = {"kernel": "the kernel's defaults for this D (tuned where measured)",
                 "stepper": "the stepper's Br x Bc"}


def _refused_now(p: Problem) -> bool:
    r = refusal(p)
    if r:
        st.error(f"Not timed: {r.reason}. Reduce B, the heads, L or D.")
    return r is not None


def _current_section(cfg: ViewConfig, machine: dict, opts: dict) -> None:
    p = problem(cfg, blocks=opts["blocks"])
    over = refusal(p)
    if over:
        st.warning(f"This configuration is over the timing budget ({over.reason}): it will "
                   "not be timed. The sweep over L times only the lengths within the budget.",
                   icon=":material/block:")
    if st.button("Time standard vs streaming for this configuration", key="run_timing",
                 icon=":material/timer:", on_click=jobs.pause, type="primary"):
        if not _refused_now(p):
            jobs.submit("current", f"timing of {cfg.describe()}",
                        jobs.work_current(p, cfg, opts["repeats"], opts["threads"], opts["ram"]),
                        cfg=cfg, problem=p, threads=opts["threads"])
    timing_results.current_results(cfg, machine)


def _sweep_section(cfg: ViewConfig, opts: dict) -> None:
    st.markdown("##### Sweep over L: where does streaming overtake standard, and why?")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    L_max = c1.select_slider("Largest L", SWEEP_MAX, value=4096, key="sweep_Lmax")
    if c2.button("Run the sweep", key="run_sweep", on_click=jobs.pause):
        Ls = sweep_Ls(cfg, L_max)
        jobs.submit("sweep", f"sweep over L up to {L_max}",
                    jobs.work_sweep(cfg, Ls, opts["blocks"], opts["repeats"], opts["threads"],
                                    opts["ram"]), cfg=cfg, threads=opts["threads"])
    timing_results.sweep_results(cfg)


def _blocks_section(cfg: ViewConfig, opts: dict) -> None:
    pb = problem(cfg)
    Brs, Bcs = jobs.sweep_grid(pb)
    if pb.Lq == 1:
        st.markdown("##### Block sizes: streaming decode's GFLOP/s over the KV block")
        st.caption("Decode has one query row per head: the kernel stacks the query heads of "
                   "a KV head as the rows of its tiles, so only the KV block Bc is a choice.")
    else:
        st.markdown("##### Block sizes: streaming GFLOP/s over (Q block, KV block)")
    if st.button(f"Sweep {len(Brs) * len(Bcs)} block sizes for this configuration",
                 key="run_blocks", on_click=jobs.pause):
        if not _refused_now(pb):
            jobs.submit("blocks", f"block-size sweep of {cfg.describe()}",
                        jobs.work_blocks(pb, cfg, opts["repeats"], opts["threads"]), cfg=cfg,
                        threads=opts["threads"], grid=(Brs, Bcs), kernel=jobs.kernel_tile(pb))
    timing_results.blocks_results(cfg)


def render(cfg: ViewConfig, machine: dict) -> None:
    st.markdown("#### Timing: the same Numba kernels, live")
    st.caption(
        "Standard attention computes all of S = QKᵀ, a softmax over it, then P·V; "
        "streaming computes the same result tile by tile (the tiles above) in parallel over "
        + ("(batch, KV head, chunk of keys: split-KV decode, its chunks merged at the end). "
           if cfg.Lq == 1 else "(batch, head, Q block). ")
        + "Both skip nothing the mask lets through; GFLOP/s counts "
        "4·D FLOPs per visible (query, key) pair for both. Runs only when you press a "
        "button, in the background: keep stepping meanwhile. Timed runs of every session "
        "take turns on this server's cores.")
    c1, c2, c3 = st.columns([2, 3, 1], vertical_alignment="bottom")
    choices = jobs.thread_choices()
    threads = c1.radio("Threads", list(choices), format_func=choices.get,
                       key="timing_threads", horizontal=True)
    blocks = c2.radio("Streaming blocks", list(BLOCK_CHOICES), format_func=BLOCK_CHOICES.get,
                      key="timing_blocks", horizontal=True)
    repeats = c3.selectbox("Samples", REPEATS, key="timing_repeats")
    opts = {"threads": jobs.threads_for(threads), "blocks": blocks, "repeats": repeats,
            "ram": psutil.virtual_memory().total}
    jobs.section("current", _current_section, cfg, machine, opts)
    jobs.section("sweep", _sweep_section, cfg, opts)
    jobs.section("blocks", _blocks_section, cfg, opts)
