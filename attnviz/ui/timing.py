"""The timing panel: standard vs streaming on the real kernels, on request only, off the
script thread.

Three buttons, each handing one job to the process's timing queue (``attnviz.runqueue``):
the current configuration (times, then each method's peak memory in a fresh process); a
sweep over L (the crossover, a roofline under the same run's roofs, a sentence on why the
winner wins); a sweep over (Q block, KV block). The jobs run one at a time on the queue's
worker thread, so no two sessions' timings share the cores, and a session never waits on
its own script thread: each section's results are a fragment that polls its job every
``POLL_S`` while it is pending (the step view above stays clickable), and one full rerun
when it ends stops the polling. A configuration over the budget is refused from its shapes
alone, before any array is built.
"""
from __future__ import annotations

import math
import time
import uuid

import numpy as np
import pandas as pd
import psutil
import streamlit as st

from kernels import tuning_summary

from .. import contention, plots, roofline
from ..runqueue import QUEUE, Job
from ..sampling import using_threads
from ..timed_call import layout, model_note, problem, sweep_layout, sweep_Ls
from ..timing import (
    Problem,
    measure_memory,
    refusal,
    sweep_blocks,
    sweep_lengths,
    time_problem,
)
from ..viewconfig import ViewConfig
from . import state

POLL_S = 1.0  # how often a pending job's section redraws (light: text, no charts)
REPEATS = (3, 5, 7)
SWEEP_MAX = (1024, 2048, 4096, 8192, 16384, 32768)
SWEEP_BRS = (16, 32, 64, 128)
SWEEP_BCS = (32, 64, 128, 256)
_JOBS, _OWNER = "timing_jobs", "timing_owner"
KINDS = {"current": "timing of one configuration", "sweep": "sweep over L",
         "blocks": "block-size sweep"}

BLOCK_CHOICES = {"kernel": "the kernel's defaults for this D (tuned)",
                 "stepper": "the stepper's Br x Bc"}


def thread_choices() -> dict[str, str]:
    import numba

    n = numba.config.NUMBA_NUM_THREADS
    return {"one": "1 thread (clean scaling)", "all": f"all {n} threads"}


# --- jobs: submitted from the script, run on the queue's worker ---------------------------------

def _owner() -> str:
    return st.session_state.setdefault(_OWNER, uuid.uuid4().hex[:8])


def _job(kind: str) -> dict | None:
    return st.session_state.get(_JOBS, {}).get(kind)


def _submit(kind: str, label: str, work, **info) -> None:
    """Queue ``work`` as this session's ``kind`` job (cancelling its previous one)."""
    jobs = st.session_state.setdefault(_JOBS, {})
    if kind in jobs:
        jobs[kind]["job"].cancel()
    jobs[kind] = {"job": QUEUE.submit(label, _owner(), work), "kind": kind, "fresh": True,
                  **info}


def _threads(choice: str) -> int:
    import numba

    return 1 if choice == "one" else numba.config.NUMBA_NUM_THREADS


def _work_current(p: Problem, cfg: ViewConfig, repeats: int, threads: int, ram: int):
    def work(job: Job) -> dict:
        with using_threads(threads) as n:
            job.report("timing streaming, then standard (warm-up, autorange, samples)", 0.1)
            res = time_problem(p, scenario=cfg.scenario, seed=cfg.seed, repeats=repeats,
                               ram=ram, check=job.check)
            job.check()
            job.report("peak memory of each method, in a fresh process", 0.7)
            measure_memory(p, {"standard": res["standard"], "streaming": res["streaming"]},
                           n, ram=ram)
            return {"res": res, "threads": n, "layout": layout(p),
                    "tuning": tuning_summary()["text"]}  # in force on this thread count
    return work


def _work_sweep(cfg: ViewConfig, Ls: list[int], blocks: str, repeats: int, threads: int,
                ram: int):
    def work(job: Job) -> dict:
        with using_threads(threads) as n:
            job.report("measuring this run's roofs: GEMM, read bandwidth, an empty call", 0.0)
            job.meta["roofs"] = roofline.measure_roofs(problem(cfg, Ls[0], blocks), n)
            job.meta["layout"] = sweep_layout([problem(cfg, L, blocks) for L in Ls])
            for k, row in enumerate(sweep_lengths(
                    lambda L: problem(cfg, L, blocks), Ls, scenario=cfg.scenario,
                    seed=cfg.seed, repeats=repeats, ram=ram, check=job.check)):
                job.items.append(row)
                job.report(f"L = {row['L']} done ({k + 1}/{len(Ls)})", (k + 1) / len(Ls))
            return {"threads": n}
    return work


def _work_blocks(p: Problem, cfg: ViewConfig, repeats: int, threads: int):
    def work(job: Job) -> dict:
        from ..timing import inputs_for

        with using_threads(threads) as n:
            q, k, v = inputs_for(p, cfg.scenario, cfg.seed)
            total = len(SWEEP_BRS) * len(SWEEP_BCS)
            for done, (a, b, r) in enumerate(sweep_blocks(
                    p, q, k, v, SWEEP_BRS, SWEEP_BCS, repeats=repeats, check=job.check),
                    start=1):
                job.items.append((a, b, r))
                job.report(f"Br={SWEEP_BRS[a]}, Bc={SWEEP_BCS[b]}: {r.gflops:.3g} GFLOP/s "
                           f"({done}/{total})", done / total)
            return {"threads": n}
    return work


# --- drawing ------------------------------------------------------------------------------------

def _pause() -> None:
    st.session_state[state.PLAYING] = False


def _cancel(kind: str) -> None:
    got = _job(kind)
    if got:
        got["job"].cancel()


def _status(kind: str, got: dict) -> None:
    """While pending: who is ahead in the queue, or the progress, and a Cancel button."""
    job: Job = got["job"]
    if job.state == "queued":
        ahead = job.ahead()
        if ahead:
            first = ahead[0]
            mine = first.owner == job.owner
            since = time.monotonic() - (first.started or first.submitted)
            st.info(f"Waiting: {len(ahead)} timing run{'s' * (len(ahead) > 1)} ahead of this "
                    f"one ({'your' if mine else 'another session'}'s {first.label}, "
                    f"{'running' if first.started else 'queued'} for {since:.0f} s). Timed runs "
                    "take turns, so that no two share the cores; this one starts when they "
                    "end.", icon=":material/hourglass_top:")
        else:
            st.info("Starting...", icon=":material/hourglass_top:")
    else:
        st.progress(job.fraction, text=job.progress or "running...")
    st.button("Cancel", key=f"cancel_{kind}", on_click=_cancel, args=(kind,))


def _load_notice(loads: list[float | None], threads: int) -> None:
    """Beside the numbers: how busy the machine was while they were measured."""
    known = [x for x in loads if x is not None]
    other = max(known) if known else None
    text = contention.describe(other, threads)
    if contention.is_busy(other):
        st.warning(text, icon=":material/warning:")
    else:
        st.caption(text)


def _ended(got: dict) -> bool:
    """Draw a failed or cancelled job's notice; True when it ended that way."""
    job: Job = got["job"]
    if job.state == "failed":
        st.error(f"The timing run failed: {job.error}")
    elif job.state == "cancelled":
        what = KINDS[got["kind"]]
        st.warning(f"{what[0].upper()}{what[1:]} cancelled"
                   + (f" after {len(job.items)} point{'s' * (len(job.items) != 1)}; showing "
                      "those." if job.items else "."))
    return job.state in ("failed", "cancelled")


RSS_FLOOR = 64 * 2**10  # the probe's mmap threshold: smaller arrays may reuse held memory


def _memory_cell(b: int | None, note: str) -> str:
    if b is None:
        return note or "–"
    if b < RSS_FLOOR:  # never "0 B": RSS cannot see it, which is not the same as none
        return f"< {plots.bytes_label(RSS_FLOOR)} (below what RSS resolves)"
    return plots.bytes_label(b)


MODEL_COLUMN = "memory model (the call as timed)"


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
            MODEL_COLUMN: _memory_cell(r.model_bytes, ""),
        })
    return pd.DataFrame(rows)


def _current_results(cfg: ViewConfig, machine: dict) -> None:
    got = _job("current")
    if not got:
        return
    job: Job = got["job"]
    if job.pending:
        _status("current", got)
        return
    if _ended(got) or not job.result:
        return
    if got["cfg"] != cfg:
        st.caption("These results are for an earlier configuration: "
                   f"{got['cfg'].describe()}, B={got['problem'].B}, Hq={got['problem'].Hq}.")
    res, n = job.result["res"], job.result["threads"]
    st.table(_run_table(res), hide_index=True)
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
    """The sweep's points so far: median (min) per method, or why it did not run."""
    def cell(r, m):
        if r[f"{m}_s"] is None:
            return f"not run ({r[f'{m}_skip_kind']})"
        return (f"{plots.duration_label(r[f'{m}_s'])} "
                f"(min {plots.duration_label(r[f'{m}_min_s'])})")
    return pd.DataFrame([{"L": str(r["L"]), "standard median (min)": cell(r, "standard"),
                          "streaming median (min)": cell(r, "streaming")} for r in rows])


def _sweep_results(cfg: ViewConfig) -> None:
    got = _job("sweep")
    if not got:
        return
    job: Job = got["job"]
    rows = list(job.items)
    if job.pending:  # the points so far as text: building charts on every poll would cost
        _status("sweep", got)  # ~0.5-1 s of this session's time and delay its step clicks
        if rows:
            st.table(_points_table(rows), hide_index=True)
        return
    _ended(got)
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


def _blocks_results() -> None:
    got = _job("blocks")
    if not got:
        return
    job: Job = got["job"]
    if job.pending:  # each point is named in the progress text; the heatmap when done
        _status("blocks", got)
        return
    _ended(got)
    items = list(job.items)
    if not items:
        return
    g = np.full((len(SWEEP_BRS), len(SWEEP_BCS)), np.nan)
    for a, b, r in items:
        g[a, b] = r.gflops
    st.plotly_chart(plots.block_sweep_chart(list(SWEEP_BRS), list(SWEEP_BCS), g),
                    theme=None, key="block_sweep_chart")
    _load_notice([r.other_cores for *_, r in items], got["threads"])


def _section(kind: str, draw, *args) -> None:
    """A section (its button and its results) as a fragment: a click in it reruns only the
    section (a refusal answers at once, without redrawing the step view); while its job is
    pending it reruns every POLL_S. A full rerun starts the polling when a job was just
    submitted, and stops it when the job ends (the Memory tab then sees the peaks)."""
    got = _job(kind)
    pending = bool(got and got["job"].pending)

    @st.fragment(run_every=POLL_S if pending else None)
    def section():
        draw(*args)
        now = _job(kind)
        if now and (now.pop("fresh", False) or now["job"].pending != pending):
            st.rerun()

    with st.container(key=f"timing_section_{kind}"):
        section()


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
                 icon=":material/timer:", on_click=_pause, type="primary"):
        if not _refused_now(p):
            _submit("current", f"timing of {cfg.describe()}",
                    _work_current(p, cfg, opts["repeats"], opts["threads"], opts["ram"]),
                    cfg=cfg, problem=p, threads=opts["threads"])
    _current_results(cfg, machine)


def _sweep_section(cfg: ViewConfig, opts: dict) -> None:
    st.markdown("##### Sweep over L: where does streaming overtake standard, and why?")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    L_max = c1.select_slider("Largest L", SWEEP_MAX, value=4096, key="sweep_Lmax")
    if c2.button("Run the sweep", key="run_sweep", on_click=_pause):
        Ls = sweep_Ls(cfg, L_max)
        _submit("sweep", f"sweep over L up to {L_max}",
                _work_sweep(cfg, Ls, opts["blocks"], opts["repeats"], opts["threads"],
                            opts["ram"]), cfg=cfg, threads=opts["threads"])
    _sweep_results(cfg)


def _blocks_section(cfg: ViewConfig, opts: dict) -> None:
    st.markdown("##### Block sizes: streaming GFLOP/s over (Q block, KV block)")
    if st.button(f"Sweep {len(SWEEP_BRS) * len(SWEEP_BCS)} block sizes for this "
                 "configuration", key="run_blocks", on_click=_pause):
        pb = problem(cfg)
        if not _refused_now(pb):
            _submit("blocks", f"block-size sweep of {cfg.describe()}",
                    _work_blocks(pb, cfg, opts["repeats"], opts["threads"]), cfg=cfg,
                    threads=opts["threads"])
    _blocks_results()


def render(cfg: ViewConfig, machine: dict) -> None:
    st.markdown("#### Timing: the same Numba kernels, live")
    st.caption(
        "Standard attention computes all of S = QKᵀ, a softmax over it, then P·V; "
        "streaming computes the same result tile by tile (the tiles above) in parallel over "
        "(batch, head, Q block). Both skip nothing the mask lets through; GFLOP/s counts "
        "4·D FLOPs per visible (query, key) pair for both. Runs only when you press a "
        "button, in the background: keep stepping meanwhile. Timed runs of every session "
        "take turns on this server's cores.")
    c1, c2, c3 = st.columns([2, 3, 1], vertical_alignment="bottom")
    choices = thread_choices()
    threads = c1.radio("Threads", list(choices), format_func=choices.get,
                       key="timing_threads", horizontal=True)
    blocks = c2.radio("Streaming blocks", list(BLOCK_CHOICES), format_func=BLOCK_CHOICES.get,
                      key="timing_blocks", horizontal=True)
    repeats = c3.selectbox("Samples", REPEATS, key="timing_repeats")
    opts = {"threads": _threads(threads), "blocks": blocks, "repeats": repeats,
            "ram": psutil.virtual_memory().total}
    _section("current", _current_section, cfg, machine, opts)
    _section("sweep", _sweep_section, cfg, opts)
    _section("blocks", _blocks_section, cfg, opts)


def measured_peaks() -> dict[str, tuple[int, int]]:
    """name -> (Lk, peak extra bytes) from the last finished timing of this session."""
    got = _job("current")
    out = {}
    if got and got["job"].state == "done" and got["job"].result:
        for m in ("standard", "streaming"):
            r = got["job"].result["res"][m]
            if r.peak_bytes is not None:
                out[m] = (got["problem"].Lk, r.peak_bytes)
    return out
