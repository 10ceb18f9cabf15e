"""The timing panel's jobs: their work, their state per session, and the sections that
poll them (with the queue position, progress and Cancel while pending, a notice if one
failed or was cancelled).

A button hands one job to ``attnviz.runqueue.QUEUE``; the queue's worker thread runs the
jobs one at a time, so no two sessions' timings share the cores, and a session never waits
on its own script thread. Each section of the panel (``timing.py``) is a fragment that
redraws every ``POLL_S`` while its job is pending (the step view above stays clickable), and
one full rerun when the job ends stops the polling. A session keeps one job per kind
(``KINDS``); a new one cancels the old.
"""
from __future__ import annotations

import time
import uuid

import streamlit as st

from kernels import tuning_summary

from .. import roofline
from ..runqueue import QUEUE, Job
from ..sampling import using_threads
from ..timed_call import layout, problem, sweep_layout
from ..timing import Problem, measure_memory, sweep_blocks, sweep_lengths, time_problem
from ..viewconfig import ViewConfig
from . import state

POLL_S = 1.0  # how often a pending job's section redraws (light: text, no charts)
SWEEP_BRS = (16, 32, 64, 128)  # the block-size sweep's grid in prefill
SWEEP_BCS = (32, 64, 128, 256)
_JOBS, _OWNER = "timing_jobs", "timing_owner"
KINDS = {"current": "timing of one configuration", "sweep": "sweep over L",
         "blocks": "block-size sweep"}


def thread_choices() -> dict[str, str]:
    """The Threads radio's choices: 1 thread for clean scaling, or all of them."""
    import numba

    n = numba.config.NUMBA_NUM_THREADS
    return {"one": "1 thread (clean scaling)", "all": f"all {n} threads"}


def _owner() -> str:
    return st.session_state.setdefault(_OWNER, uuid.uuid4().hex[:8])


def get(kind: str) -> dict | None:
    """This session's job of ``kind`` with what it was submitted for, or None."""
    return st.session_state.get(_JOBS, {}).get(kind)


def submit(kind: str, label: str, work, **info) -> None:
    """Queue ``work`` as this session's ``kind`` job (cancelling its previous one)."""
    jobs = st.session_state.setdefault(_JOBS, {})
    if kind in jobs:
        jobs[kind]["job"].cancel()
    jobs[kind] = {"job": QUEUE.submit(label, _owner(), work), "kind": kind, "fresh": True,
                  **info}


def threads_for(choice: str) -> int:
    """The thread count of a ``thread_choices`` key."""
    import numba

    return 1 if choice == "one" else numba.config.NUMBA_NUM_THREADS


def work_current(p: Problem, cfg: ViewConfig, repeats: int, threads: int, ram: int):
    """The job of the current configuration: both methods timed, then each one's peak
    memory in a fresh process; the result names the kernel choices in force."""
    def work(job: Job) -> dict:
        with using_threads(threads) as n:
            job.report("timing both methods in turns (warm-up, autorange, samples)", 0.1)
            res = time_problem(p, scenario=cfg.scenario, seed=cfg.seed, repeats=repeats,
                               ram=ram, check=job.check)
            job.check()
            job.report("peak memory of each method, in a fresh process", 0.7)
            measure_memory(p, {"standard": res["standard"], "streaming": res["streaming"]},
                           n, ram=ram)
            return {"res": res, "threads": n, "layout": layout(p),
                    "tuning": tuning_summary()["text"]}  # in force on this thread count
    return work


def work_sweep(cfg: ViewConfig, Ls: list[int], blocks: str, repeats: int, threads: int,
               ram: int):
    """The job of the sweep over L: this run's roofs first, then one row per L (as it
    finishes, in ``job.items``, so the section shows the points so far)."""
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


def sweep_grid(p: Problem) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(Brs, Bcs) the block-size sweep times for ``p``. Decode (Lq == 1) has no Q block to
    choose (the g query heads of a KV head are its rows): its grid is one row, over the KV
    blocks the autotune races for decode (``kernels.autotune``), which reach farther."""
    if p.Lq == 1:
        from kernels.autotune import FULL

        return (1,), tuple(FULL.decode_Bc)
    return SWEEP_BRS, SWEEP_BCS


def kernel_tile(p: Problem) -> tuple[int, int]:
    """The cell of ``sweep_grid(p)`` the kernel's own blocks for ``p`` would be."""
    return (1, p.blocks[1]) if p.Lq == 1 else p.blocks


def work_blocks(p: Problem, cfg: ViewConfig, repeats: int, threads: int):
    """The job of the block-size sweep: streaming's GFLOP/s over ``sweep_grid(p)``."""
    Brs, Bcs = sweep_grid(p)

    def work(job: Job) -> dict:
        from ..timing import inputs_for

        with using_threads(threads) as n:
            q, k, v = inputs_for(p, cfg.scenario, cfg.seed)
            total = len(Brs) * len(Bcs)
            for done, (a, b, r) in enumerate(sweep_blocks(
                    p, q, k, v, Brs, Bcs, repeats=repeats, check=job.check), start=1):
                job.items.append((a, b, r))
                tile = f"Bc={Bcs[b]}" if p.Lq == 1 else f"Br={Brs[a]}, Bc={Bcs[b]}"
                job.report(f"{tile}: {r.gflops:.3g} GFLOP/s ({done}/{total})", done / total)
            return {"threads": n}
    return work


def pause() -> None:
    """Stop the step view's Play (a button's on_click): a timed run should not share the
    cores with the player."""
    st.session_state[state.PLAYING] = False


def _cancel(kind: str) -> None:
    got = get(kind)
    if got:
        got["job"].cancel()


def status(kind: str, got: dict) -> None:
    """While pending: who is ahead in the queue, or the progress, and a Cancel button."""
    job: Job = got["job"]
    if job.state == "queued":
        ahead = job.ahead()
        if ahead:
            first = ahead[0]
            whose = "your" if first.owner == job.owner else "another session's"
            since = time.monotonic() - (first.started or first.submitted)
            st.info(f"Waiting: {len(ahead)} timing run{'s' * (len(ahead) > 1)} ahead of this "
                    f"one ({whose} {first.label}, "
                    f"{'running' if first.started else 'queued'} for {since:.0f} s). Timed runs "
                    "take turns, so that no two share the cores; this one starts when they "
                    "end.", icon=":material/hourglass_top:")
        else:
            st.info("Starting...", icon=":material/hourglass_top:")
    else:
        st.progress(job.fraction, text=job.progress or "running...")
    st.button("Cancel", key=f"cancel_{kind}", on_click=_cancel, args=(kind,))


def ended(got: dict) -> bool:
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


def section(kind: str, draw, *args) -> None:
    """A section (its button and its results) as a fragment: a click in it reruns only the
    section (a refusal answers at once, without redrawing the step view); while its job is
    pending it reruns every POLL_S. A full rerun starts the polling when a job was just
    submitted, and stops it when the job ends (the Memory tab then sees the peaks)."""
    got = get(kind)
    pending = bool(got and got["job"].pending)

    @st.fragment(run_every=POLL_S if pending else None)
    def fragment():
        draw(*args)
        now = get(kind)
        if now and (now.pop("fresh", False) or now["job"].pending != pending):
            st.rerun()

    with st.container(key=f"timing_section_{kind}"):
        fragment()
