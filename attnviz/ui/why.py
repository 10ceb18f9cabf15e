"""The "why the result is exact" panel: for the selected row and step, its scores as standard
attention sees them, the streaming state after each tile beside the partial sums it stands
for, the identity as a formula with the live numbers, and the accumulator itself.

Behind a toggle (off by default): a step click with it off costs nothing more; with it on,
the panel's numbers (``attnviz.exactness``: a score row and one replay of the Q block's
tiles) and one figure are made on each step. The figure is a PNG drawn on the server
(``why_images.why_figure``), kept in the server's figure cache, like the step view's others:
a Plotly figure here cost a step click ~0.25 s more (0.5 s instead of 0.25 s, measured with
``python -m tests.browser.latency --panels``), ~40-100 ms of it building the figure.
"""
from __future__ import annotations

import math

import numpy as np
import streamlit as st

from ..exactness import Exactness, accumulator, exactness
from ..livemath import latex_block
from ..trace import step_label
from ..why_images import why_figure
from . import mathpanel, rowtable
from .cache import TracedHead, caches
from .figures import Shown, show
from .text import heading

TOGGLE = "why_open"
MATH_KEY, TILES_KEY, CHART_KEY = "why_math", "why_tiles", "why_chart"
COLUMNS = ("step", "j", "keys", "m_j", "l_j", "l_j·e^(m_j−M)", "Σ_seen e^(s−M)", "rel. diff")


def _g(x: float, digits: int = 6) -> str:
    return "−∞" if x == -math.inf else f"{x:.{digits}g}"


def tiles_data(ex: Exactness) -> dict:
    """The tiles table: one line per tile visited so far, both sides of the invariant."""
    rows = []
    for t in ex.tiles:
        diff = abs(t.scaled - t.partial) / t.partial if t.partial else abs(t.scaled)
        rows.append([str(step_label(t.n)), str(t.j), f"{t.k0}–{t.k1 - 1}", _g(t.m, 5),
                     _g(t.l, 5), _g(t.scaled, 7), _g(t.partial, 7), f"{diff:.0e}"])
    return {"columns": list(COLUMNS), "rows": rows}


def summary(ex: Exactness) -> list[str]:
    """The lines under the heading: what standard attention sees, and at the end both
    sums and the output beside the oracle."""
    nvis = int(ex.visible.sum())
    sink = f" plus the sink logit {ex.sink:.4g}" if ex.sink > -math.inf else ""
    if ex.M == -math.inf:
        lines = [f"Standard attention: row {ex.r} sees **no key** (every score is masked): "
                 "its softmax is empty, and both methods return O = 0."]
    else:
        lines = [f"Standard attention: row {ex.r} sees **{nvis} of {ex.s.shape[0]}** keys"
                 f"{sink}; global max **M = {ex.M:.6g}**, denominator "
                 f"**Σ exp(s − M) = {ex.total:.7g}**."]
    if ex.seen_nothing and ex.M > -math.inf:
        lines.append("The loop has not met a visible key of this row yet: m = −∞, l = 0, and "
                     "the partial sum over the keys seen is 0 too.")
    if ex.last:
        t = ex.tiles[-1]
        diff = abs(t.scaled - ex.total) / ex.total if ex.total else abs(t.scaled)
        with np.errstate(invalid="ignore", over="ignore"):
            e_soft = float(np.abs(ex.O - ex.O_softmax).max())
            e_or = float(np.abs(ex.O - ex.O_oracle).max())
        lines.append(f"Last tile of this row: streaming **l·exp(m − M) = {t.scaled:.7g}**, "
                     f"standard **{ex.total:.7g}** (relative difference {diff:.1e}); "
                     f"O = acc / l against softmax(s)·V: max |diff| **{e_soft:.1e}**, against "
                     f"the float64 oracle **{e_or:.1e}**.")
    return lines


def notes(ex: Exactness, bug: str | None) -> str:
    """The note under the identity: with a bug, whether the two sides have parted yet."""
    if not bug:
        return ""
    bad = next((t for t in ex.tiles if not t.holds), None)
    if bad is not None:
        return (f"The invariant is broken: the two sides differ (≠), first after "
                f"step {step_label(bad.n)} (KV block {bad.j}), beyond float32 rounding. That is "
                f"what the bug {bug} breaks.")
    if ex.broken:
        return (f"The invariant is broken: the full sums differ (≠). That is what the bug "
                f"{bug} breaks.")
    return (f"The two sides still agree: up to this step the bug {bug} leaves this invariant "
            "on l intact. A bug can break the accumulator instead: see acc below, and O "
            "beside the oracle at the row's last tile.")


def render(head: TracedHead, n: int, r: int) -> None:
    if not st.toggle("Why the result is exact (the invariant and the accumulator, on this "
                     "row)", key=TOGGLE):
        return
    trace = head.trace
    ex = exactness(trace, r, n)
    acc = accumulator(trace, r, n, head.O_ref)
    heading(f"Why it is exact: query row {r}, step {step_label(n)}",
            "Standard attention sees the whole score row s at once. The loop never does: "
            "after each tile it keeps only m (its max so far) and l (its sum so far). Yet "
            "l · exp(m − M) is always the sum of exp(s − M) over the keys seen so far: the "
            "running sum is the partial sum, written in the current max's scale. Rescaling "
            "by alpha keeps it so when the max moves; after the last tile it is the full "
            "denominator, and O = acc / l is softmax(s)·V.", *summary(ex))
    mathpanel.render_box(MATH_KEY, ex.mathml(), latex_block(ex.latex()), notes(ex, trace.bug))
    rowtable.render(tiles_data(ex), key=TILES_KEY)
    fig = caches().figures.get(("why", head.key, n, r), lambda: Shown.of(why_figure(ex, acc)))
    show(fig, CHART_KEY)
