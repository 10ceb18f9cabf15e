"""The update formulas of one step with one row's recorded numbers substituted (LaTeX).

``row_math(trace, n, r)`` reads query row r's numbers at step n straight from the trace
(m before/after, rowmax of its S, alpha, l before/after, rowsum of its P~, ||acc||) and, when
n finishes r's Q block, its O and LSE. ``RowMath.latex()`` writes the formulas with exactly
those numbers (``fmt``): what is shown is what the kernel computed, not a recomputation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .trace import Trace


def fmt(x: float) -> str:
    """A recorded float32 number in LaTeX, 6 significant digits; -inf as -\\infty."""
    x = float(x)
    if math.isinf(x):
        return r"-\infty" if x < 0 else r"\infty"
    s = f"{x:.6g}"
    if "e" in s:
        mant, exp = s.split("e")
        return rf"{mant} \times 10^{{{int(exp)}}}"
    return s


def _sub(x: float) -> str:
    """``fmt`` for the right operand of a minus sign: negatives in parentheses."""
    return f"({fmt(x)})" if x < 0 else fmt(x)


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
    def rescaled(self) -> bool:
        """The max moved and there was state to rescale (not the row's first visible tile)."""
        return self.alpha != 1.0 and not math.isinf(self.m_before)

    def latex(self) -> list[str]:
        """One display-math block per formula: the formula, then the recorded numbers on a
        second line ("old": before this step, "new": after it; r the row, (i, j) the tile)."""
        ij, r = f"{self.i},{self.j}", self.r
        old, new = r"_{\text{old}}", r"_{\text{new}}"
        rows = [(rf"m{new}", rf"\max\big(m{old},\ \mathrm{{rowmax}}(S_{{{ij}}})_{{{r}}}\big)",
                 rf"\max\big({fmt(self.m_before)},\ {fmt(self.s_max)}\big) = {fmt(self.m)}")]
        if self.seen_nothing:
            rows.append((rf"\ell{new}", r"0 \quad \text{(no visible key yet: } m = -\infty,\ "
                         r"\tilde P = 0\text{)}", fmt(self.l)))
            return [_aligned(*row) for row in rows]
        rows += [
            (r"\alpha", rf"e^{{\,m{old} - m{new}}}",
             rf"e^{{\,{fmt(self.m_before)} - {_sub(self.m)}}} = {fmt(self.alpha)}"),
            (rf"\mathrm{{rowsum}}(\tilde P_{{{ij}}})_{{{r}}}",
             rf"\textstyle\sum_k e^{{\,S_{{{ij}}}[{r},k] - m{new}}}", fmt(self.p_sum)),
            (rf"\ell{new}", rf"\alpha\,\ell{old} + \mathrm{{rowsum}}(\tilde P_{{{ij}}})_{{{r}}}",
             rf"{fmt(self.alpha)} \cdot {fmt(self.l_before)} + {fmt(self.p_sum)} = {fmt(self.l)}"),
            (rf"\mathrm{{acc}}{new}", rf"\alpha\,\mathrm{{acc}}{old} + (\tilde P_{{{ij}}}"
             rf" V_{{{self.j}}})_{{{r}}}", rf"\text{{a vector with }} \lVert\cdot\rVert = "
             rf"{fmt(self.acc_norm)}"),
        ]
        if self.finished:
            rows += [
                (rf"\lVert O_{{{r}}} \rVert", r"\lVert \mathrm{acc} \rVert / \ell",
                 rf"{fmt(self.acc_norm)} / {fmt(self.l)} = {fmt(self.o_norm)}"),
                (rf"\mathrm{{LSE}}_{{{r}}}", r"m + \log \ell",
                 rf"{fmt(self.m)} + \log {fmt(self.l)} = {fmt(self.lse)}"),
            ]
        return [_aligned(*row) for row in rows]


def latex_block(lines: list[str]) -> str:
    """The formulas of ``RowMath.latex`` as one display block, stacked with some space: the
    page renders it as one element (seven elements cost the browser ~50 ms per step)."""
    return r"\begin{gathered}" + r" \\[10pt] ".join(lines) + r"\end{gathered}"


def _aligned(lhs: str, formula: str, numbers: str) -> str:
    return rf"\begin{{aligned}} {lhs} &= {formula} \\ &= {numbers} \end{{aligned}}"


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
