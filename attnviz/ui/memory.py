"""The memory panel: the full score matrix vs the streaming working set, now and as L grows."""
from __future__ import annotations

import pandas as pd
import psutil
import streamlit as st

from .. import memory, memory_images, plots
from ..stats import memory_series
from ..timed_call import problem
from ..viewconfig import ViewConfig

CHART_LS = [2**k for k in range(7, 18)]  # 128 .. 128K


def shape_at(cfg: ViewConfig, L: int) -> memory.Shape:
    """The configuration's shape with the sequence length set to L (as its mode grows)."""
    Lq = {"prefill": L, "chunked": min(cfg.chunk, L), "decode": 1}[cfg.mode]
    return memory.Shape(cfg.B, cfg.Hq, cfg.Hkv, Lq, L, cfg.D)


def working_set_caption(cfg: ViewConfig, threads: int) -> str:
    """The streaming working set as the sum of its buffers, so the table's number can be
    rebuilt by hand: terms per task, their sum, times the busy threads (one task each at a
    time, and no more threads than tasks). In decode a task is one chunk of one KV head, its
    rows the g query heads sharing it."""
    s = _shape(cfg)
    terms = memory.task_terms(s, cfg.Br, cfg.Bc)
    per_task = memory.task_bytes(s, cfg.Br, cfg.Bc)
    chunks = _chunks_at(cfg, cfg.Lk)
    busy = memory.busy_threads(s, cfg.Br, threads, chunks)
    parts = " + ".join(f"{name} {shape} ({plots.bytes_label(b)})" for name, shape, b in terms)
    task = "one Q block" if s.Lq > 1 else (
        f"one chunk of one KV head: its {s.Hq // s.Hkv} query head(s) are the rows, Br does "
        "not apply")
    fewer = "" if busy == threads else (
        f" (only {memory.tasks(s, cfg.Br, chunks)} task(s) for {threads} threads)")
    return (f"Streaming working set, per task ({task}): {parts} = "
            f"**{plots.bytes_label(per_task)}** ({per_task} B); × {busy} busy thread"
            f"{'s' * (busy > 1)}{fewer}, one task each at a time = "
            f"**{plots.bytes_label(busy * per_task)}** ({busy * per_task} B).")


def kernel_blocks_caption(cfg: ViewConfig, threads: int) -> str | None:
    """The streaming total with the kernel's own blocks (the ones the timing panel's calls
    use), when they are not the sidebar's: the two figures a learner may meet. Both count
    ``threads`` threads; the timing panel's model counts the threads it times with."""
    p = problem(cfg)  # the kernel's blocks
    Br, Bc = p.blocks
    if (Bc if cfg.Lq == 1 else (Br, Bc)) == (cfg.Bc if cfg.Lq == 1 else (cfg.Br, cfg.Bc)):
        return None
    tiles = (f"decode tiles of {Bc} keys in {p.chunks} chunk(s) per KV head" if cfg.Lq == 1
             else f"blocks {Br}×{Bc}")
    total = memory.streaming_bytes(p.shape, Br, Bc, threads, p.chunks)
    return (f"With the kernel's own {tiles} (the ones the Timing tab's calls use) instead "
            f"of the sidebar's, streaming's total on {threads} threads is "
            f"**{plots.bytes_label(total)}**. The Timing tab's model column counts the threads "
            "it times with (one task's working set per busy thread).")


def _shape(cfg: ViewConfig) -> memory.Shape:
    return memory.Shape(cfg.B, cfg.Hq, cfg.Hkv, cfg.Lq, cfg.Lk, cfg.D)


def _chunks_at(cfg: ViewConfig, L: int) -> int:
    """The decode path's chunks per KV head at L keys with the sidebar's Bc (1 in prefill)."""
    return problem(cfg, L, blocks="stepper").chunks


def render(cfg: ViewConfig, threads: int, measured: dict[str, tuple[int, int]]) -> None:
    st.markdown("#### Memory: the full score matrix vs a tile")
    st.caption(
        "Standard attention materializes S (and P) for every head: B·Hq·Lq·Lk floats, "
        "quadratic in the sequence length. Streaming keeps, per thread, a Br×Bc score tile S "
        "and its P~, a Br×D accumulator and three numbers per row, whatever Lk is, plus the "
        "output. GQA by copying (the seed "
        "engine's repeat_kv) duplicates K and V out to Hq heads; indexing KV head h // g "
        "costs nothing.")
    s = _shape(cfg)
    rows = memory.footprint(s, cfg.Br, cfg.Bc, threads, _chunks_at(cfg, cfg.Lk))
    ram = psutil.virtual_memory().total
    c1, c2 = st.columns([2, 3])
    with c1:
        tiles = (f"Br×Bc={cfg.Br}×{cfg.Bc}" if cfg.Lq > 1 else
                 f"Bc={cfg.Bc} (decode: the {cfg.Hq // cfg.Hkv} query head(s) of a KV head are "
                 f"the rows; {_chunks_at(cfg, cfg.Lk)} chunk(s) per KV head)")
        st.markdown(f"Current: B={cfg.B}, Hq={cfg.Hq}, Hkv={cfg.Hkv}, Lq={cfg.Lq}, "
                    f"Lk={cfg.Lk}, D={cfg.D}, {tiles}, {threads} threads")
        st.table(pd.DataFrame({"what": list(rows),
                               "bytes": [plots.bytes_label(b) for b in rows.values()]}),
                 hide_index=True)
        st.caption(working_set_caption(cfg, threads))
        kernel = kernel_blocks_caption(cfg, threads)
        if kernel:
            st.caption(kernel)
        available = psutil.virtual_memory().available
        st.caption(f"This machine: {plots.bytes_label(ram)} RAM, "
                   f"{plots.bytes_label(available)} available now.")
        for name, (L, b) in measured.items():
            st.caption(f"Measured peak for {name} at L={L}: {plots.measured_bytes_label(b)} "
                       "above the level before the call (timing panel).")
    with c2:
        x_title = {"prefill": "sequence length L (= Lq = Lk)",
                   "chunked": f"keys Lk (chunk of {cfg.chunk} queries)",
                   "decode": "keys Lk (one query)"}[cfg.mode]
        series = memory_series(lambda L: shape_at(cfg, L), CHART_LS, cfg.Br, cfg.Bc, threads,
                               chunks_at=lambda L: _chunks_at(cfg, L))
        # an image, like the step view's figures: no chart library on the page's first load
        fig = memory_images.memory_chart(CHART_LS, series, ram=ram, current_L=cfg.Lk,
                                         measured=measured, x_title=x_title)
        with st.container(key="memory_chart"):
            st.image(fig.data_url(), width=fig.width, alt=fig.alt)
