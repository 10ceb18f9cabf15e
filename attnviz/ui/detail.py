"""The current step: its S and P~ tiles, every row's state around it, one row's history and
live math, and the output rows finished so far against the float64 oracle.

The figures are PNGs drawn on the server before the panels (``figures.build``): they change
on every step, and an image swap is the cheapest thing a browser can redraw.
"""
from __future__ import annotations

import numba
import numpy as np
import streamlit as st

from kernels import tuning
from kernels.tuning import products

from ..livemath import row_math
from ..timed_call import problem
from ..trace import Trace, step_label
from ..viewconfig import BLOCK_OPTIONS, ViewConfig
from . import mathpanel, rowtable, state
from .cache import TracedHead
from .figures import StepFigures, show
from .text import aside, heading


def _title(trace: Trace, n: int) -> str:
    s = trace.steps[n]
    c = trace.config
    (i0, i1), (k0, k1) = c.rows(s.i), c.keys(s.j)
    rows = f"row {i0}" if i1 - i0 == 1 else f"rows {i0}–{i1 - 1}"
    return (f"Step {step_label(n)} of {len(trace.steps)}: Q block {s.i} ({rows}) "
            f"× KV block {s.j} (keys {k0}–{k1 - 1}), {s.kind}")


def render_tiles(trace: Trace, cfg: ViewConfig, n: int, figs: StepFigures) -> None:
    tuned = tuning.active()
    origin = ("tuned on this host for its thread count" if tuned.tuned and tuned.decode
              else "the built-in choice: no tuning is stored for this host")
    decode = ("Decode: the trace walks the KV tiles of the single query in order, each "
              "tile's products computed as this host's decode kernel computes them ("
              f"{products(trace.config.loops)}: {origin}). " + kernel_cut(cfg))
    heading(_title(trace, n),
            "Left: the scores S of this tile (query rows x keys), scaled by 1/sqrt(D); masked "
            "entries are grey. Right: P~ = exp(S − m′), with m′ each row's running max "
            "*after* this tile, so every entry is ≤ 1 and exp never overflows. The table "
            "lists each row's state: m (running max) and l (running sum of P~) before and "
            "after, and alpha = exp(m old − m new), the factor by which the old l and output "
            "accumulator were rescaled because the max moved; \"none: first tile\" marks a "
            "row's first visible key (m_old = −∞: nothing to rescale yet).",
            *([aside(decode)] if cfg.mode == "decode" else []))
    show(figs.tiles, "step_tiles")
    rowtable.render(figs.rows)


def kernel_cut(cfg: ViewConfig) -> str:
    """How the timed decode call cuts the same keys, beside the stepper's sidebar tiles: the
    kernel's own KV block for D (tuned per host, often longer than any sidebar block) and
    its chunks, merged with the same rescaling (the Split-KV tab walks them)."""
    p = problem(cfg)
    Bc, C = p.blocks[1], p.chunks
    same = "the same tiles as here" if Bc == cfg.Bc else (
        f"tiles of {Bc} keys, not the sidebar's {cfg.Bc}" + (
            "" if Bc in BLOCK_OPTIONS else " (longer than the sidebar offers: the stepper "
                                           "walks smaller tiles so that you can see them)"))
    split = ("in a single chunk, one tile after another as here" if C == 1 else
             f"in {C} chunks per KV head, computed in parallel and merged with the same "
             "rescaling (the Split-KV tab walks them)")
    threads = numba.get_num_threads()
    return (f"The decode call for B={cfg.B}, Hkv={cfg.Hkv} on this host's {threads} "
            f"thread{'s' * (threads > 1)} takes {same}, "
            f"{split}. Other tiles give the same result up to float32 rounding: each cut "
            "sums in another order.")


def current_row(trace: Trace, n: int) -> int:
    """The chosen row (absolute) within step n's Q block; the control stores its offset."""
    i0, i1 = trace.config.rows(trace.steps[n].i)
    offset = min(max(int(st.session_state.get(state.ROW, 0)), 0), i1 - i0 - 1)
    st.session_state[state.ROW] = offset
    return i0 + offset


CORRECT_ROW = ("The running max m only grows; each time it grows (red triangles) the old sum l "
               "and the accumulated output are multiplied by alpha < 1, so that every term "
               "keeps the form exp(score − current max).")


def row_caption(trace: Trace, n: int, r: int) -> list[str]:
    """The lines over row r's history chart up to step n. The correct loop's m only grows;
    under a bug that is no longer true, so the lines say what this buggy row did."""
    if not trace.bug:
        return [CORRECT_ROW]
    t = r - trace.config.rows(r // trace.config.Br)[0]
    upto = [s for s in trace.row_history(r) if s.n <= n]
    fell = [s for s in upto if np.isfinite(s.m_before[t]) and s.m[t] < s.m_before[t]]
    lines = [f"Bug `{trace.bug}` on: the chart shows the buggy loop's m and l. In the correct "
             "loop m only grows and every rescale has alpha < 1; here each red triangle marks "
             "a rescale with alpha ≠ 1."]
    if fell:
        blocks = ", ".join(str(s.j) for s in fell[:6]) + (", …" if len(fell) > 6 else "")
        lines.append(f"**This bug lets m fall**: row {r}'s m dropped at KV block "
                     f"{blocks}, where alpha = exp(m old − m new) > 1 scaled l and acc *up*.")
    else:
        lines.append(f"Up to this step, row {r}'s m has not fallen.")
    return lines


def render_row(trace: Trace, n: int, r: int, figs: StepFigures) -> None:
    i0, i1 = trace.config.rows(trace.steps[n].i)
    heading(f"One row, step by step: query row {r}", *row_caption(trace, n, r))
    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.number_input(f"Row within the Q block (0 – {i1 - i0 - 1})", 0, max(0, i1 - i0 - 1),
                        key=state.ROW)
        st.checkbox("m of all rows", key=state.ALL_ROWS)
    show(figs.row, "row_history")


def render_math(trace: Trace, n: int, r: int) -> None:
    rm = row_math(trace, n, r)
    heading(f"Live math: query row {r}, step {step_label(n)}",
            "The update of this step, with the numbers the kernel recorded for this row "
            "(\"old\": before the step, \"new\": after it).")
    notes = []
    if rm.first_tile:
        notes.append("First tile of this row: nothing to rescale (m_old = −∞), so alpha = "
                     "exp(−∞) = 0 multiplies an empty state.")
    if rm.rescaled:
        notes.append(f"The max moved: everything row {r} accumulated so far was multiplied "
                     f"by alpha = {rm.alpha:.4g}.")
    if not rm.finished:
        notes.append(f"O and LSE of this row are final after step "
                     f"{step_label(trace.block_done_after[rm.i])}, the last tile of Q block "
                     f"{rm.i}.")
    mathpanel.render(rm, " ".join(notes))


def render_output(head: TracedHead, n: int, figs: StepFigures) -> None:
    trace = head.trace
    done, err_o, err_l = figs.errors
    bad = int((done & ~np.isfinite(err_o)).sum())  # a bug lab's overflow
    finite_o, finite_l = err_o[done & np.isfinite(err_o)], err_l[done & np.isfinite(err_l)]
    err = (f"max |O − oracle| **{finite_o.max(initial=0):.2e}**, max |LSE − oracle| "
           f"**{finite_l.max(initial=0):.2e}**" if done.any() else "no error to show yet")
    if bad:
        err += f"; **{bad} rows not finite** (inf or NaN)"
    first = trace.first_departure(head.O_ref) if trace.bug else None  # the banner's step
    departed = first is not None and n >= first
    bug = "" if not trace.bug else (
        f" (the correct algorithm; under the bug lab's `{trace.bug}` the finished rows "
        "depart from the oracle by the error below)" if departed else
        f" (the correct algorithm; under the bug lab's `{trace.bug}` the rows finished so "
        "far still agree with the oracle)")
    heading("Output rows finished so far",
            "A Q block's rows are divided by l (O = acc / l) once its last tile is done. Each "
            "finished row is compared with a float64 oracle that materializes the whole "
            f"masked softmax: the streaming result is exact up to float32 rounding{bug}.",
            f"Rows finished: **{int(done.sum())} / {trace.config.Lq}**; {err}.")
    show(figs.output, "output_rows")
