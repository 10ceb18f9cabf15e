"""Predict-then-reveal: every question's answer agrees with the trace, read independently."""
from __future__ import annotations

import numpy as np
import pytest

from attnviz import run_trace
from attnviz.quiz import ALPHA_BUCKETS, KINDS, NO, YES, question

CASES = {
    "prefill": dict(Lq=37, Lk=37, q_block=8, kv_block=6),
    "chunked window": dict(Lq=20, Lk=60, q_block=5, kv_block=7, window=13),
    "decode": dict(Lq=1, Lk=45, q_block=1, kv_block=8),
    "sinks": dict(Lq=40, Lk=40, q_block=8, kv_block=5, window=9, sinks=2),
}


def _trace(case, bug=None):
    kw = dict(CASES[case])
    Lq, Lk = kw.pop("Lq"), kw.pop("Lk")
    rng = np.random.default_rng(len(case))
    q, k, v = (rng.standard_normal((L, 8)).astype(np.float32) * 2 for L in (Lq, Lk, Lk))
    return run_trace(q, k, v, bug=bug, **kw)


@pytest.mark.parametrize("bug", [None, "no_max_carry"])
@pytest.mark.parametrize("case", CASES)
def test_answers_agree_with_the_trace(case, bug):
    trace = _trace(case, bug)
    kinds = set()
    for n in range(len(trace.steps)):
        for offset in (0, 3):
            q = question(trace, n, offset)
            kinds.add(q.kind)
            assert q.answer in q.options and len(set(q.options)) == len(q.options)
            assert q.check(q.answer) and not q.check(None) and q.reason
            s = trace.steps[n]
            if q.kind in ("max_moves", "alpha"):
                nxt = trace.steps[n + 1]
                i0, i1 = trace.config.rows(nxt.i)
                t = min(offset, i1 - i0 - 1)
                assert f"row {i0 + t}" in q.prompt
                if q.kind == "max_moves":
                    assert q.answer == (YES if nxt.m[t] != nxt.m_before[t] else NO)
                else:
                    a = float(nxt.alpha[t])
                    want = (0 if a == 1 else 1 if 0.5 <= a < 1 else 2 if a < 0.5 else 3)
                    assert q.answer == ALPHA_BUCKETS[want]
            elif q.kind == "skipped":
                ahead = [j for j in range(s.j + 1, trace.config.Tc)][:4]
                assert q.answer == str(sum(trace.tile_status[s.i, j] == "skipped"
                                           for j in ahead))
                assert len(q.options) == len(ahead) + 1
            else:
                later = [x for x in trace.steps if x.i == s.i and x.n > n]
                assert q.answer == str(len(later))
    # along a trace every kind is asked, except skipped tiles where none can follow
    assert kinds >= {"max_moves", "alpha", "remaining"}, kinds
    assert kinds == set(KINDS) or case == "decode"


def test_the_last_step_asks_what_still_applies():
    trace = _trace("prefill")
    q = question(trace, len(trace.steps) - 1)
    assert q.kind == "remaining" and q.answer == "0"
    assert "last computed tile" in q.reason
