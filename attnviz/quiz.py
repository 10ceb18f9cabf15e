"""Predict, then reveal: one question about the next step, generated from the trace.

At step n (what the page shows) ``question(trace, n, offset)`` asks about what comes next,
before it is shown; the answer and its one-sentence reason are read from the trace, never
canned. Four kinds, taken in turn along the steps (a kind that does not apply is passed):

* ``max_moves``: at the next step, will row r's running max m move?
* ``alpha``: which bucket will row r's alpha = exp(m_old − m_new) fall in?
* ``skipped``: of the next tiles of this Q block in the grid, how many are skipped?
* ``remaining``: how many more tiles will this Q block compute?
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .trace import Trace, step_label

KINDS = ("max_moves", "alpha", "skipped", "remaining")
AHEAD = 4  # tiles looked at by ``skipped``

YES, NO = "yes, it grows", "no, it stays"
ALPHA_BUCKETS = ("exactly 1", "between 0.5 and 1", "below 0.5", "above 1")


@dataclass(frozen=True)
class Question:
    kind: str
    n: int  # asked while step n is shown
    prompt: str
    options: tuple[str, ...]
    answer: str
    reason: str  # one sentence: why the answer is what it is

    def check(self, choice: str | None) -> bool:
        return choice == self.answer


def alpha_bucket(alpha: float) -> str:
    """exactly 1 / [0.5, 1) / below 0.5 / above 1 (only a bug gives that)."""
    if alpha == 1.0:
        return ALPHA_BUCKETS[0]
    if 0.5 <= alpha < 1.0:
        return ALPHA_BUCKETS[1]
    if alpha < 0.5:
        return ALPHA_BUCKETS[2]
    return ALPHA_BUCKETS[3]


def _f(x: float) -> str:
    return "−∞" if x == -math.inf else f"{x:.4g}"


def _next_row(trace: Trace, n: int, offset: int) -> tuple[int, int]:
    """(r, t): the row of step n + 1's Q block at ``offset`` (clamped), and its index t."""
    i0, i1 = trace.config.rows(trace.steps[n + 1].i)
    t = min(max(offset, 0), i1 - i0 - 1)
    return i0 + t, t


def _where(trace: Trace, m: int) -> str:
    s = trace.steps[m]
    return f"step {step_label(m)} (Q block {s.i} × KV block {s.j})"


def _max_moves(trace: Trace, n: int, offset: int) -> Question | None:
    if n + 1 >= len(trace.steps):
        return None
    r, t = _next_row(trace, n, offset)
    s = trace.steps[n + 1]
    m_old, s_max, m_new = float(s.m_before[t]), float(s.s_max[t]), float(s.m[t])
    moves = m_new != m_old
    if s_max == -math.inf:
        why = f"row {r} sees no key of this tile, so m stays {_f(m_old)}."
    elif m_old == -math.inf:
        why = (f"it is row {r}'s first visible key: m leaves −∞ for this tile's rowmax "
               f"{_f(s_max)}.")
    else:
        why = (f"this tile's rowmax of S for row {r} is {_f(s_max)} against m_old = "
               f"{_f(m_old)}, so m_new = {_f(m_new)}.")
    return Question("max_moves", n, f"At the next {_where(trace, n + 1)}, will the running "
                    f"max m of row {r} move?", (YES, NO), YES if moves else NO,
                    why[0].upper() + why[1:])


def _alpha(trace: Trace, n: int, offset: int) -> Question | None:
    if n + 1 >= len(trace.steps):
        return None
    r, t = _next_row(trace, n, offset)
    s = trace.steps[n + 1]
    a, m_old, m_new = float(s.alpha[t]), float(s.m_before[t]), float(s.m[t])
    if m_old == -math.inf and m_new == -math.inf:
        why = f"Row {r} has seen no key yet (m = −∞ before and after): nothing moves, alpha = 1."
    elif m_old == -math.inf:
        why = (f"It is row {r}'s first visible key: alpha = exp(−∞ − {_f(m_new)}) = 0, "
               "nothing to rescale.")
    else:
        why = (f"alpha = exp(m_old − m_new) = exp({_f(m_old)} − {_f(m_new)}) = {a:.4g}"
               + (": the max did not move." if a == 1.0 else
                  ": above 1 only when the max went down, which a carried max never does."
                  if a > 1.0 else "."))
    return Question("alpha", n, f"At the next {_where(trace, n + 1)}, which bucket will "
                    f"row {r}'s rescale factor alpha fall in?", ALPHA_BUCKETS,
                    alpha_bucket(a), why)


def _skipped(trace: Trace, n: int, offset: int) -> Question | None:
    s = trace.steps[n]
    ahead = list(range(s.j + 1, min(s.j + 1 + AHEAD, trace.config.Tc)))
    if not ahead:
        return None
    status = trace.tile_status[s.i]
    skipped = [j for j in ahead if status[j] == "skipped"]
    span = f"KV tile {ahead[0]}" if len(ahead) == 1 else f"KV tiles {ahead[0]}–{ahead[-1]}"
    if skipped:
        rest = len(ahead) - len(skipped)
        why = (f"KV tile(s) {', '.join(map(str, skipped))}: no row of Q block {s.i} may see "
               "any of their keys, so the loop never computes them"
               + (f"; the other {rest} hold visible keys." if rest else "."))
    else:
        why = f"Every one of them holds keys some row of Q block {s.i} sees: none is skipped."
    return Question("skipped", n, f"Of the next {len(ahead)} tiles of Q block {s.i} in the "
                    f"grid ({span}), how many are skipped?",
                    tuple(str(x) for x in range(len(ahead) + 1)), str(len(skipped)), why)


def _remaining(trace: Trace, n: int, offset: int) -> Question:
    s = trace.steps[n]
    left = trace.block_done_after[s.i] - n  # the block's steps come in a row
    columns = trace.config.Tc - 1 - s.j  # tiles to the right in the grid, skipped or not
    options = sorted({left, left + 1, max(left - 1, 0), columns, left + 2})
    if left == 0:
        why = f"This is Q block {s.i}'s last computed tile: its rows are now final (O = acc / l)."
    else:
        why = (f"Q block {s.i} computes {left} more tile{'s' if left > 1 else ''}, ending at "
               f"step {step_label(trace.block_done_after[s.i])}"
               + (f"; {columns - left} of the {columns} tiles to its right are skipped."
                  if columns > left else "."))
    return Question("remaining", n, f"After this step, how many more tiles will Q block "
                    f"{s.i} compute?", tuple(str(o) for o in options), str(left), why)


_MAKERS = {"max_moves": _max_moves, "alpha": _alpha, "skipped": _skipped,
           "remaining": _remaining}


def question(trace: Trace, n: int, offset: int = 0) -> Question:
    """The question asked at step n about the row at ``offset`` in its Q block: the kinds in
    turn (n mod 4), passing those that do not apply here (``remaining`` always does)."""
    for k in range(len(KINDS)):
        q = _MAKERS[KINDS[(n + k) % len(KINDS)]](trace, n, offset)
        if q is not None:
            return q
    raise AssertionError("remaining always applies")  # unreachable
