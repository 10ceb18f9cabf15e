"""The update formulas of one step with one row's recorded numbers substituted.

``row_math(trace, n, r)`` reads query row r's numbers at step n straight from the trace
(m before/after, rowmax of its S, alpha, l before/after, rowsum of its P~, ||acc||) and, when
n finishes r's Q block, its O and LSE. ``RowMath.equations()`` writes the formulas with
exactly those numbers (``attnviz.formula``: as LaTeX and as MathML): what is shown is what the
kernel computed, not a recomputation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .formula import (
    Equation,
    Math,
    bracket,
    fn,
    join,
    mathml_block,
    mi,
    mo,
    norm,
    num,
    num_operand,
    paren,
    space,
    sub,
    sup,
    text,
    tilde,
    word,
)
from .trace import Trace


def fmt(x: float) -> str:
    """A recorded float32 number in LaTeX, 6 significant digits; -inf as -\\infty."""
    return num(x).tex


@dataclass(frozen=True)
class RowMath:
    """Row r (absolute), its position in the block, and its numbers at step n."""

    n: int
    i: int
    j: int
    r: int
    m_before: float
    s_max: float
    m: float
    alpha: float
    l_before: float
    p_sum: float
    l: float
    acc_norm: float
    finished: bool  # step n is the last of r's Q block: O and LSE are final
    lse: float
    o_norm: float

    @property
    def seen_nothing(self) -> bool:
        """The row has not met a visible key yet (m is still -inf)."""
        return math.isinf(self.m) and self.m < 0

    @property
    def first_tile(self) -> bool:
        """This step is the row's first visible key: m_old = -inf, nothing to rescale."""
        return math.isinf(self.m_before) and not self.seen_nothing

    @property
    def rescaled(self) -> bool:
        """The max moved and there was state to rescale (not the row's first visible tile)."""
        return self.alpha != 1.0 and not math.isinf(self.m_before)

    def equations(self) -> list[Equation]:
        """The formulas of this step, each with the recorded numbers on a second line
        ("old": before this step, "new": after it; r the row, (i, j) the tile)."""
        e, m, ell, P, S = mi("e"), mi("m"), mi(r"\ell", "ℓ"), tilde(mi("P")), mi("S")
        alpha, acc = mi(r"\alpha", "α"), word("acc")
        old, new = text("old"), text("new")
        m_old, m_new, l_old, l_new = sub(m, old), sub(m, new), sub(ell, old), sub(ell, new)
        ij, r = _indices(self.i, self.j), _indices(self.r)
        minus, plus, eq, comma = mo("-", "−"), mo("+"), mo("="), mo(",")
        V_j = sub(mi("V"), _indices(self.j))
        rowmax = sub(word("rowmax") + paren(sub(S, ij), False), r)
        rows = [Equation(
            m_new,
            fn("max") + paren(m_old + comma + space(0.17) + rowmax),
            fn("max") + paren(num(self.m_before) + comma + space(0.17) + num(self.s_max))
            + eq + num(self.m))]
        if self.seen_nothing:
            rows.append(Equation(
                l_new,
                num(0) + space(1) + text("(no visible key yet: ") + m + eq + num(-math.inf)
                + comma + space() + P + eq + num(0) + text(")"),
                num(self.l)))
            return rows
        rowsum = sub(word("rowsum") + paren(sub(P, ij), False), r)
        rows += [
            Equation(alpha, sup(e, m_old + minus + m_new),
                     sup(e, num(self.m_before) + minus + num_operand(self.m)) + eq
                     + num(self.alpha)),
            Equation(rowsum,
                     sub(mo(r"\sum", "∑"), mi("k")) + sup(e, sub(S, ij) + bracket(
                         r + comma + mi("k")) + minus + m_new),
                     num(self.p_sum)),
            Equation(l_new, alpha + l_old + plus + rowsum,
                     num(self.alpha) + mo(r"\cdot", "·") + num(self.l_before) + plus
                     + num(self.p_sum) + eq + num(self.l)),
            Equation(sub(acc, new),
                     alpha + sub(acc, old) + plus + sub(paren(sub(P, ij) + V_j, False), r),
                     text("a vector with ") + norm(mo(r"\cdot", "·")) + eq
                     + num(self.acc_norm)),
        ]
        if self.finished:
            log = fn("log") + space(0.17)
            rows += [
                Equation(norm(sub(mi("O"), r)), norm(acc) + mo("/") + ell,
                         num(self.acc_norm) + mo("/") + num(self.l) + eq + num(self.o_norm)),
                Equation(sub(word("LSE"), r), m + plus + log + ell,
                         num(self.m) + plus + log + num(self.l) + eq + num(self.lse)),
            ]
        return rows

    def latex(self) -> list[str]:
        """The equations in LaTeX, one aligned block each."""
        return [eq.tex for eq in self.equations()]

    def mathml(self) -> str:
        """The equations in MathML, block <math> elements (what the page shows)."""
        return mathml_block(self.equations())


def _indices(*ks: int) -> Math:
    """Tile or row indices as a subscript: ``1,2``."""
    return join([num(k) for k in ks], mo(","))


def latex_block(lines: list[str]) -> str:
    """The formulas of ``RowMath.latex`` as one display block, stacked with some space: the
    LaTeX a reader copies from the live math panel."""
    return r"\begin{gathered}" + r" \\[10pt] ".join(lines) + r"\end{gathered}"


def row_math(trace: Trace, n: int, r: int) -> RowMath:
    """Row r's numbers at step n. r must be a row of step n's Q block."""
    step = trace.steps[n]
    i0, i1 = trace.config.rows(step.i)
    if not i0 <= r < i1:
        raise ValueError(f"row {r} is not in Q block {step.i} (rows {i0}..{i1 - 1})")
    t = r - i0
    finished = trace.block_done_after.get(step.i) == n
    return RowMath(
        n=n, i=step.i, j=step.j, r=r,
        m_before=float(step.m_before[t]), s_max=float(step.s_max[t]), m=float(step.m[t]),
        alpha=float(step.alpha[t]), l_before=float(step.l_before[t]),
        p_sum=float(step.p_sum[t]), l=float(step.l[t]), acc_norm=float(step.acc_norm[t]),
        finished=finished, lse=float(trace.lse[r]),
        o_norm=float(np.linalg.norm(trace.out[r])),
    )
