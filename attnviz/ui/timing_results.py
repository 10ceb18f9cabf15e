"""The timing panel's results: the run table, the sweep's charts and "why", the block heatmap.

Each ``*_results`` draws its job's state (``timing_jobs``): the queue position or progress
while pending, a notice if it failed or was cancelled, else the numbers, with how busy the
machine was while they were measured (``attnviz.contention``) beside them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import streamlit as st

from .. import contention, plots, roofline
from ..runqueue import Job
from ..timed_call import model_note
from ..timing import verdict
from ..viewconfig import ViewConfig
from . import timing_jobs as jobs

MODEL_COLUMN = "memory model (the call as timed)"


def _load_notice(loads: list[float | None], threads: int) -> None:
    """Beside the numbers: how busy the machine was while they were measured."""
    known = [x for x in loads if x is not None]
    other = max(known) if known else None
    text = contention.describe(other, threads)
    if contention.is_busy(other):
        st.warning(text, icon=":material/warning:")
    else:
        st.caption(text)


def _memory_cell(b: int | None, note: str) -> str:
    return (note or "–") if b is None else plots.measured_bytes_label(b)


def _run_table(res: dict) -> pd.DataFrame:
    rows = []
    for r in (res["standard"], res["streaming"]):
        s = r.samples
        rows.append({
            "method": r.method,
            "min": plots.duration_label(r.min_s),
            "median": plots.duration_label(r.median_s),
            "spread (IQR)": f"±{50 * s.spread:.0f}%" if s else "–",
            "samples": (f"{s.n} x {s.number} call{'s' * (s.number > 1)}"
                        + (f" ({len(s.dropped)} warm-up dropped)" if s.dropped else "")
                        if s else (r.skipped or "")),
            "GFLOP/s": "–" if r.gflops is None else f"{r.gflops:.3g}",
            "peak extra memory (measured)": _memory_cell(r.peak_bytes, r.memory_note),
            MODEL_COLUMN: "–" if r.model_bytes is None else plots.bytes_label(r.model_bytes),
        })
    return pd.DataFrame(rows)


def current_results(cfg: ViewConfig, machine: dict) -> None:
    """The current configuration's job: the run table, how busy the machine was, the
    error between the methods, how it was measured and the kernel choices."""
    got = jobs.get("current")
    if not got:
        return
    job: Job = got["job"]
    if job.pending:
        jobs.status("current", got)
        return
    if jobs.ended(got) or not job.result:
        return
    if got["cfg"] != cfg:
        st.caption("These results are for an earlier configuration: "
                   f"{got['cfg'].describe()}, B={got['problem'].B}, Hq={got['problem'].Hq}.")
    res, n = job.result["res"], job.result["threads"]
    said = verdict(res["standard"], res["streaming"])
    if said:
        st.markdown(f"**{said}**")
    st.table(_run_table(res), hide_index=True)
    few = [m for m in ("standard", "streaming")
           if res[m].samples and res[m].samples.n <= 3 and res[m].samples.number == 1]
    if few:
        st.caption(f"{' and '.join(few).capitalize()}: each sample is a single call (one call "
                   "takes ≥ 0.2 s), so the median rests on 3 calls or fewer; choose more "
                   "Samples above for a firmer figure.")
    _load_notice([res[m].other_cores for m in ("standard", "streaming")], n)
    gp = got["problem"]
    if res["max_abs_diff"] is not None:
        st.caption(f"max |O_standard − O_streaming| = {res['max_abs_diff']:.2e} over all "
                   f"B·Hq·Lq·D = {gp.B * gp.Hq * gp.Lq * gp.D} outputs; "
                   f"{res['flops'] / 1e9:.3g} GFLOP per call (4·D per visible pair); "
                   f"{job.result['layout']}.")
    st.caption(f"Threads: {n} of {machine['threads']} ({machine['threading layer']}); tile "
               f"GEMMs: {machine['blas']}; dtype: {machine['dtype']}. Min: the least disturbed "
               "sample; median with the interquartile spread; a sample is as many calls as "
               "take ≥ 0.2 s (timeit's autorange), warm-up excluded. Peak extra memory: "
               "resident memory above the level before the call, in a fresh process with the "
               "inputs already allocated. Below ~1 MiB measured and model can differ by a "
               "tile: RSS counts 4 KiB pages, and a small tile may come from memory the "
               "process already held. " + model_note(got["cfg"], gp))
    if job.result.get("tuning"):
        st.caption(f"Kernel choices: {job.result['tuning']}. Tuned once per host by "
                   "`make warm` or `python -m attnviz.bench --autotune`.")


def _skip_captions(rows: list[dict]) -> None:
    """One caption per method and reason, lengths in order."""
    for m in ("standard", "streaming"):
        for kind, name in plots.SKIP_NAMES.items():
            hit = sorted((r for r in rows if r[f"{m}_skipped"] and r[f"{m}_skip_kind"] == kind),
                         key=lambda r: r["L"])
            if hit:
                st.caption(f"{m} {name} at L = {', '.join(str(r['L']) for r in hit)} "
                           f"({hit[-1][f'{m}_skipped']} at L = {hit[-1]['L']}).")


def _explanations(rows: list[dict], roofs: roofline.Roofs, cfg: ViewConfig) -> list[str]:
    """The sentence at the measured L nearest to the configuration's, and at the largest L
    where both ran (the reason often changes with L even when the winner does not)."""
    both = [r for r in rows if r["standard_s"] and r["streaming_s"]]
    if not both:
        return []
    near = min(both, key=lambda r: (abs(math.log2(r["L"] / cfg.Lk)), r["L"]))
    out = [roofline.explain(near, roofs)]
    if both[-1] is not near:
        out.append(roofline.explain(both[-1], roofs))
    return out


def _points_table(rows: list[dict]) -> pd.DataFrame:
    """The sweep's points so far: median (min, spread, samples) per method, or why it did
    not run: how firm each point is, which the charts do not show."""
    def cell(r, m):
        if r[f"{m}_s"] is None:
            return f"not run ({r[f'{m}_skip_kind']})"
        spread = r.get(f"{m}_spread")
        return (f"{plots.duration_label(r[f'{m}_s'])} "
                f"(min {plots.duration_label(r[f'{m}_min_s'])}"
                + ("" if spread is None else f", ±{50 * spread:.0f}%")
                + f", {r.get(f'{m}_n', 0)} samples)")
    return pd.DataFrame([{"L": str(r["L"]), "standard median (min, spread, samples)":
                          cell(r, "standard"), "streaming median (min, spread, samples)":
                          cell(r, "streaming")} for r in rows])


def sweep_results(cfg: ViewConfig) -> None:
    """The sweep's job: the points so far while it runs; then the crossover chart, the
    roofline under the same run's roofs, and why the winner wins."""
    got = jobs.get("sweep")
    if not got:
        return
    job: Job = got["job"]
    rows = list(job.items)
    if job.pending:  # the points so far as text: building charts on every poll would cost
        jobs.status("sweep", got)  # ~0.5-1 s of this session's time and delay its step clicks
        if rows:
            st.table(_points_table(rows), hide_index=True)
        return
    jobs.ended(got)
    if not rows:
        return
    roofs = job.meta.get("roofs")
    what = job.meta.get("layout", "")
    st.caption(f"{what[:1].upper()}{what[1:]}; "
               f"{got['threads']} thread{'s' * (got['threads'] > 1)}.")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(plots.crossover_chart(rows), theme=None, key="crossover_chart")
    if roofs:
        with right:
            st.plotly_chart(plots.roofline_chart(roofline.points(rows), roofs.gemm_gflops,
                                                 roofs.read_gbps),
                            theme=None, key="roofline_chart")
        for text in _explanations(rows, roofs, cfg):
            st.markdown(f"**Why:** {text}")
        st.caption(f"Roofs measured in this run on {roofs.threads} thread"
                   f"{'s' * (roofs.threads > 1)}: GEMM {roofs.gemm_gflops:.0f} GFLOP/s "
                   f"(NumPy 1024³), read {roofs.read_gbps:.0f} GB/s (np.max over 256 MiB), an "
                   f"almost empty call {plots.duration_label(roofs.call_overhead_s)}. Bytes "
                   "moved are a model: standard passes over its S "
                   f"{roofline.S_PASSES} times; streaming reads K/V once per Q block.")
    _skip_captions(rows)
    _load_notice([r[f"{m}_other_cores"] for r in rows for m in ("standard", "streaming")],
                 got["threads"])
    with st.expander("The sweep's numbers"):  # the charts' points, without hovering
        st.table(_points_table(rows), hide_index=True)


def blocks_results(cfg: ViewConfig) -> None:
    """The block-size sweep's job: the GFLOP/s heatmap once it ends, with the kernel's
    default and the sidebar's tile (as the sweep ran) marked."""
    got = jobs.get("blocks")
    if not got:
        return
    job: Job = got["job"]
    if job.pending:  # each point is named in the progress text; the heatmap when done
        jobs.status("blocks", got)
        return
    jobs.ended(got)
    items = list(job.items)
    if not items:
        return
    Brs, Bcs = got["grid"]
    g = np.full((len(Brs), len(Bcs)), np.nan)
    for a, b, r in items:
        g[a, b] = r.gflops
    decode = Brs == (1,)
    ran = got["cfg"]  # the sidebar as the sweep ran (it may have changed since)
    if ran != cfg:
        st.caption(f"This sweep ran for an earlier configuration: {ran.describe()}.")
    marks = {"kernel default": got["kernel"],
             "sidebar (stepper)": (1 if decode else ran.Br, ran.Bc)}
    st.plotly_chart(plots.block_sweep_chart(list(Brs), list(Bcs), g, marks=marks),
                    theme=None, key="block_sweep_chart")
    off = [f"the {name} {_tile(tile, decode)}" for name, tile in marks.items()
           if tile[0] not in Brs or tile[1] not in Bcs]
    if off:
        text = " and ".join(off)
        st.caption(text[0].upper() + text[1:] + (" lie" if len(off) > 1 else " lies")
                   + " off this grid.")
    _load_notice([r.other_cores for *_, r in items], got["threads"])


def _tile(blocks: tuple[int, int], decode: bool) -> str:
    return f"Bc = {blocks[1]}" if decode else f"{blocks[0]} x {blocks[1]}"


def measured_peaks() -> dict[str, tuple[int, int]]:
    """name -> (Lk, peak extra bytes) from the last finished timing of this session."""
    got = jobs.get("current")
    out = {}
    if got and got["job"].state == "done" and got["job"].result:
        for m in ("standard", "streaming"):
            r = got["job"].result["res"][m]
            if r.peak_bytes is not None:
                out[m] = (got["problem"].Lk, r.peak_bytes)
    return out
