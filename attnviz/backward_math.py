"""The backward pass's formulas for one entry of the current tile, on the recorded numbers.

``tile_math(trace, n, r, c)`` reads query row r and key c of backward step n from the
``BackwardTrace`` (S, P, the forward's P~ / l, dP, dS, D, LSE and the accumulators before
and after the step) and writes the formulas with exactly those numbers (``attnviz.formula``:
LaTeX and MathML), the way ``livemath`` does for the forward: what is shown is what the
kernel's tile routine computed, not a recomputation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .backward_trace import BackwardTrace
from .formula import (
    Equation,
    bracket,
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


@dataclass(frozen=True)
class TileMath:
    """Row r (absolute) and key c (absolute) of step n, with the numbers recorded there."""

    n: int
    i: int
    j: int
    h: int
    r: int
    c: int
    scale: float
    s: float  # S[r, c] (-inf: masked)
    lse: float
    p: float  # P[r, c] = exp(S - LSE)
    m: float  # the forward's final m and l of row r
    l: float
    p_fwd: float  # exp(S - m) / l
    D: float  # rowsum(dO_r * O_r)
    dP: float
    dS: float
    dV_old: float  # norms of the accumulators' rows c (dK, dV) and r (dQ)
    dV_new: float
    dK_old: float
    dK_new: float
    dQ_old: float
    dQ_new: float

    @property
    def masked(self) -> bool:
        return math.isinf(self.s)

    @property
    def dS_is_rounding(self) -> bool:
        """dS = P·(dP − D) nonzero but at float32 rounding level: dP and D equal up to a few
        ulps of the larger (a row that sees one key has P = 1 and dP = D exactly)."""
        eps = float(np.finfo(np.float32).eps)
        return self.dS != 0 and abs(self.dS) <= 8 * eps * self.p * max(abs(self.dP),
                                                                       abs(self.D))

    @property
    def rounding_note(self) -> str:
        """The words for a rounding-level dS ("" otherwise), shown below the formulas."""
        if not self.dS_is_rounding:
            return ""
        return (f"dS = {self.dS:.3g} here is 0 up to float32 rounding: dP and D agree to "
                "float32 precision" + (" (P = 1: the row's whole weight is on this key, so dP = D)"
                                       if self.p == 1 else "") + ".")

    def equations(self) -> list[Equation]:
        """P, D, dP, dS of entry (r, c), then the three accumulations (as norms: they are
        vectors of D numbers), each with its numbers on a second line."""
        e, S, P = mi("e"), mi("S"), mi("P")
        rc = bracket(join([num(self.r), num(self.c)], mo(",")))
        minus, eq, dot = mo("-", "−"), mo("="), mo(r"\cdot", "·")
        lse = sub(word("LSE"), num(self.r))
        Pf = tilde(P) + mo("/") + mi(r"\ell", "ℓ")
        dO_r, O_r = sub(word("dO"), num(self.r)), sub(mi("O"), num(self.r))
        dP, dS, Dr = word("dP") + rc, word("dS") + rc, sub(mi("D"), num(self.r))
        rows = [Equation(
            P + rc, sup(e, S + rc + minus + lse),
            (text("0 (masked: S = −∞)") if self.masked else
             sup(e, num(self.s) + minus + num_operand(self.lse)) + eq + num(self.p)))]
        if not self.masked and self.l > 0:
            rows.append(Equation(
                Pf + rc, sup(e, S + rc + minus + mi("m")) + mo("/") + mi(r"\ell", "ℓ"),
                sup(e, num(self.s) + minus + num_operand(self.m)) + mo("/") + num(self.l)
                + eq + num(self.p_fwd)))
        ds_value = (num(self.p) + dot + paren(num(self.dP) + minus + num_operand(self.D),
                                              False) + eq + num(self.dS))
        if self.dS_is_rounding:  # e.g. a row that sees one key: dP = D, so dS is 0 (the
            ds_value = ds_value + mo(r"\approx", "≈") + num(0)  # words: ``rounding_note``)
        rows += [
            Equation(Dr, word("rowsum") + paren(dO_r + mo(r"\circ", "∘") + O_r, False),
                     num(self.D)),
            Equation(dP, dO_r + dot + sub(mi("V"), num(self.c)), num(self.dP)),
            Equation(dS, P + rc + paren(dP + minus + Dr, False),
                     ds_value),
        ]
        rows += self._accumulations()
        return rows

    def _accumulations(self) -> list[Equation]:
        new, old = text("new"), text("old")
        ij = join([num(self.i), num(self.j)], mo(","))
        sig = mi(r"\sigma", "σ")  # the softmax scale, 1 / sqrt(D) by default

        def acc(name, idx, term, before, after) -> Equation:
            X_new = sub(word(name), num(idx) + mo(",") + new)
            X_old = sub(word(name), num(idx) + mo(",") + old)
            return Equation(X_new, X_old + mo("+") + term,
                            text("a vector with ") + norm(mo(r"\cdot", "·")) + mo(":")
                            + space(0.2) + num(before) + space(0.2) + mo(r"\to", "→")
                            + space(0.2) + num(after))

        P_t = sup(sub(mi("P"), ij), mi("T"))
        dS_t = sup(sub(word("dS"), ij), mi("T"))
        return [
            acc("dV", self.c, sub(paren(P_t + word("dO"), False), num(self.c)),
                self.dV_old, self.dV_new),
            acc("dK", self.c, sig + sub(paren(dS_t + mi("Q"), False), num(self.c)),
                self.dK_old, self.dK_new),
            acc("dQ", self.r, sig + sub(paren(sub(word("dS"), ij) + mi("K"), False),
                                        num(self.r)), self.dQ_old, self.dQ_new),
        ]

    def latex(self) -> list[str]:
        return [eq.tex for eq in self.equations()]

    def mathml(self) -> str:
        return mathml_block(self.equations())


def tile_math(trace: BackwardTrace, n: int, r: int, c: int) -> TileMath:
    """Entry (r, c) of step n: r a row of its Q block, c a key of its KV block (absolute)."""
    s = trace.steps[n]
    cfg = trace.config
    (i0, i1), (k0, k1) = cfg.rows(s.i), cfg.keys(s.j)
    if not i0 <= r < i1:
        raise ValueError(f"row {r} is not in Q block {s.i} (rows {i0}..{i1 - 1})")
    if not k0 <= c < k1:
        raise ValueError(f"key {c} is not in KV block {s.j} (keys {k0}..{k1 - 1})")
    a, b = r - i0, c - k0
    S = float(s.S[a, b])
    P_fwd = float(s.P_fwd[a, b])
    lse = float(trace.lse[s.h, r])

    def nrm(x) -> float:
        return float(np.linalg.norm(x))

    return TileMath(
        n=n, i=s.i, j=s.j, h=s.h, r=r, c=c, scale=cfg.scale, s=S, lse=lse,
        p=float(s.P[a, b]), m=float(s.m_fwd[a]), l=float(s.l_fwd[a]), p_fwd=P_fwd,
        D=float(trace.D[s.h, r]),
        dP=float(s.dP[a, b]), dS=float(s.dS[a, b]),
        dV_old=nrm(s.dV_before[b]), dV_new=nrm(s.dV[b]), dK_old=nrm(s.dK_before[b]),
        dK_new=nrm(s.dK[b]), dQ_old=nrm(s.dQ_before[a]), dQ_new=nrm(s.dQ[a]))

