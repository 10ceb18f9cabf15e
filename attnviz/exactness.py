"""Why the streaming result is exact, on the live numbers of one row (pure: no Streamlit).

Standard attention sees query row r's whole score vector s (all Lk keys, masked ones -inf),
its max M and the denominator Σ exp(s − M). The streaming loop never has s; after each tile
j it holds only (m_j, l_j). The invariant that makes it exact:

    l_j · exp(m_j − M)  =  Σ_{keys seen through tile j} exp(s − M)

the running sum is always the partial sum, written in the current max's scale. After the
row's last tile both sides are the full denominator, and O = acc / l is softmax(s) · V.

``exactness(trace, r, n)`` gives both sides for every tile row r's block visited up to step
n (the loop's m_j, l_j as recorded, float32; the partial sums in float64 from the inputs);
``accumulator(trace, r, n)`` the D entries of acc around step n (replayed, ``Trace.replay``).
Works with every mask and mode, a sink logit (a term of every sum, there from the start), a
row that has seen no key yet (l = 0, both sides 0) and a row that sees none (M = −∞). Under a
bug (``attnviz.bugs``) the two sides part: that is the lesson. The formula then writes "≠"
and says the invariant is broken (``agree``: equal up to float32 rounding, ``RTOL``), so the
page never prints "=" between unequal numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .formula import (
    Equation,
    Math,
    bracket,
    mathml_block,
    mi,
    mo,
    num,
    space,
    sub,
    sup,
    text,
)
from .masks import visible_mask
from .reference import attention_reference
from .trace import Trace

# Two sides "agree" within this relative difference. The correct loop's sides differ only by
# float32 rounding (its running sums and its m, seen ~1e-8..1e-5 apart even with logits of
# +-100); a bug parts them by far more (0.5 in the learner's no_l_rescale row).
RTOL = 1e-3


def agree(a: float, b: float) -> bool:
    """a and b equal up to float32 rounding (``RTOL``); two infinities of one sign agree."""
    if a == b:
        return True
    if not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(a - b) <= RTOL * max(abs(a), abs(b))


@dataclass(frozen=True)
class TileSum:
    """Row r after one visited tile: the loop's state and both sides of the invariant."""

    n: int  # step
    j: int  # KV block
    k0: int  # its keys [k0, k1)
    k1: int
    m: float  # m_j, as the loop recorded it (float32)
    l: float  # l_j
    scaled: float  # l_j · exp(m_j − M)
    partial: float  # Σ exp(s − M) over the visible keys of the tiles visited so far

    @property
    def holds(self) -> bool:
        """The invariant holds after this tile (up to float32 rounding)."""
        return agree(self.scaled, self.partial)


@dataclass(frozen=True)
class Exactness:
    """Query row r at step n, seen by standard attention and by the streaming loop."""

    r: int
    n: int
    s: np.ndarray  # [Lk] float64 scores as standard attention sees them, -inf where masked
    visible: np.ndarray  # [Lk] bool: the true mask's row
    sink: float  # the sink logit, -inf when there is none
    M: float  # global max of the row (sink included), -inf when it sees nothing
    total: float  # Σ exp(s − M) over every visible key (+ exp(sink − M))
    tiles: list[TileSum]  # the tiles of r's block visited up to step n, in order
    last: bool  # step n is the last tile of r's block: O is final
    O: np.ndarray | None  # [D] acc / l as the loop produced it (when last)
    O_softmax: np.ndarray | None  # [D] softmax(s) · V, float64 (when last)
    O_oracle: np.ndarray | None  # [D] the float64 oracle's row (when last)

    @property
    def seen_nothing(self) -> bool:
        """No visible key met yet (and no sink logit): the running sum is still 0."""
        return not self.tiles or self.tiles[-1].l == 0.0

    @property
    def broken(self) -> bool:
        """A bug broke the invariant: after some tile so far, or in the full sums at the
        last tile, the two sides differ beyond float32 rounding."""
        return (any(not t.holds for t in self.tiles)
                or (self.last and not agree(self.tiles[-1].scaled if self.tiles else 0.0,
                                            self.total)))

    @property
    def sees_none(self) -> bool:
        return not self.visible.any()

    def equations(self) -> list[Equation]:
        """The invariant as a formula with this step's numbers, and at the row's last tile
        the full denominators side by side (``attnviz.formula``: LaTeX and MathML)."""
        e, ell, m, M, s = mi("e"), mi(r"\ell", "ℓ"), mi("m"), mi("M"), mi("s")
        minus, dot, eq = mo("-", "−"), mo(r"\cdot", "·"), mo("=")
        k = mi("k")
        t = self.tiles[-1] if self.tiles else None
        j = num(t.j) if t else mi("j")
        seen = sub(mo(r"\sum", "∑"), k + mo(r"\in", "∈") + text("keys seen"))
        rows = [Equation(
            sub(ell, j) + dot + sup(e, sub(m, j) + minus + M),
            seen + sup(e, sub(s, k) + minus + M),
            (num(t.l) + dot + sup(e, num(t.m) + minus + _operand(self.M)) + eq
             + sides(t.scaled, t.partial)) if t else num(0))]
        if self.last:
            every = sub(mo(r"\sum", "∑"), k + mo(r"\in", "∈") + text("all keys"))
            rows.append(Equation(
                ell + dot + sup(e, m + minus + M),
                every + sup(e, sub(s, k) + minus + M),
                sides(t.scaled if t else 0.0, self.total)))
        return rows

    def mathml(self) -> str:
        return mathml_block(self.equations())

    def latex(self) -> list[str]:
        return [eq.tex for eq in self.equations()]


def space_eq() -> Math:
    """ "=" between the two sides' numbers, with a little room."""
    return mo(r"\;=\;", "=")


def space_neq() -> Math:
    """ "≠" between the two sides' numbers, with a little room."""
    return mo(r"\;\neq\;", "≠")


def sides(lhs: float, rhs: float) -> Math:
    """``lhs = rhs`` when they agree up to float32 rounding; else ``lhs ≠ rhs`` and the words
    "invariant broken" (a bug's run): never "=" between unequal numbers."""
    if agree(lhs, rhs):
        return num(lhs) + space_eq() + num(rhs)
    return num(lhs) + space_neq() + num(rhs) + space(0.8) + text("(invariant broken)")


def _operand(x: float) -> Math:
    return bracket(num(x)) if x < 0 else num(x)


def _scores(trace: Trace, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Row r's scores over all keys in float64 (as the oracle computes them) and its row of
    the true mask: ([Lk] with -inf where masked, [Lk] bool)."""
    c, mk = trace.config, trace.config.mask
    q_offset = mk.q_offset if mk.causal else 0
    vis = visible_mask(1, c.Lk, causal=mk.causal, q_offset=q_offset + r, window=mk.window,
                       sinks=mk.sinks, prefix=mk.prefix, doc_ids=mk.doc_ids)[0]
    s = c.scale * (trace.k.astype(np.float64) @ trace.q[r].astype(np.float64))  # [Lk]
    return np.where(vis, s, -np.inf), vis


def _exp_from(x: np.ndarray | float, M: float):
    """exp(x − M), 0 where x = -inf (and everywhere when M = -inf: nothing is visible)."""
    x = np.asarray(x, np.float64)
    if M == -math.inf:
        return np.zeros_like(x)
    return np.where(x > -np.inf, np.exp(np.where(x > -np.inf, x, 0.0) - M), 0.0)


def _check(trace: Trace, r: int, n: int) -> int:
    i0, i1 = trace.config.rows(trace.steps[n].i)
    if not i0 <= r < i1:
        raise ValueError(f"row {r} is not in Q block {trace.steps[n].i} of step {n} "
                         f"(rows {i0}..{i1 - 1})")
    return r - i0


def exactness(trace: Trace, r: int, n: int) -> Exactness:
    """Both sides of the invariant for row r (absolute) at step n (r in step n's Q block)."""
    t = _check(trace, r, n)
    c, i = trace.config, trace.steps[n].i
    s, vis = _scores(trace, r)
    sink = float(c.mask.sink_array(1)[0])
    M = float(max(s.max(initial=-np.inf), sink))
    terms = _exp_from(s, M)  # [Lk]
    sink_term = float(_exp_from(sink, M))
    tiles, seen = [], sink_term
    for step in trace.row_history(r):
        if step.n > n:
            break
        k0, k1 = c.keys(step.j)
        seen += float(terms[k0:k1].sum())
        m, l = float(step.m[t]), float(step.l[t])
        scaled = 0.0 if l == 0.0 else l * float(_exp_from(m, M)) if M > -math.inf else math.inf
        tiles.append(TileSum(step.n, step.j, k0, k1, m, l, scaled, seen))
    last = trace.block_done_after.get(i) == n
    O = O_soft = O_or = None
    if last:
        O = trace.out[r].copy()
        total = terms.sum() + sink_term
        O_soft = (terms @ trace.v.astype(np.float64)) / total if total > 0 else np.zeros(c.D)
        kw = {**c.mask.keywords(), "q_offset": c.mask.q_offset + r if c.mask.causal else None}
        O_or = attention_reference(trace.q[r:r + 1], trace.k, trace.v, **kw,
                                   scale=c.scale)[0][0]
    return Exactness(r=r, n=n, s=s, visible=vis, sink=sink, M=M,
                     total=float(terms.sum() + sink_term), tiles=tiles, last=last, O=O,
                     O_softmax=O_soft, O_oracle=O_or)


@dataclass(frozen=True)
class Accumulator:
    """Row r's accumulator around step n, [D] float32 each: acc_new = alpha · acc_old + P~V_j
    (as the loop computed it); at the row's last tile also O = acc / l and the oracle's row."""

    r: int
    n: int
    alpha: float
    acc_old: np.ndarray
    scaled_old: np.ndarray  # alpha · acc_old
    PV: np.ndarray  # P~ V_j, this tile's contribution
    acc_new: np.ndarray
    O: np.ndarray | None  # [D] when step n finishes r's block
    O_oracle: np.ndarray | None


def accumulator(trace: Trace, r: int, n: int, O_ref: np.ndarray | None = None) -> Accumulator:
    """Row r's accumulator at step n; ``O_ref`` [Lq, D] the oracle (computed for the row when
    not given)."""
    t = _check(trace, r, n)
    rep = trace.replay(n)
    last = trace.block_done_after.get(trace.steps[n].i) == n
    O = O_or = None
    if last:
        O = trace.out[r].copy()
        O_or = O_ref[r] if O_ref is not None else exactness(trace, r, n).O_oracle
    a = rep.alpha[t]
    with np.errstate(over="ignore", invalid="ignore"):  # a bug's alpha may be inf
        scaled = (a * rep.acc_old[t]).astype(np.float32)
    return Accumulator(r=r, n=n, alpha=float(a), acc_old=rep.acc_old[t], scaled_old=scaled,
                       PV=rep.PV[t], acc_new=rep.acc_new[t], O=O, O_oracle=O_or)
