"""The exactness panel's numbers: the loop's l · exp(m − M) equals the partial sum over the
keys seen, and at the end the float64 oracle's denominator, to float32 rounding, in every
mode and mask (rows that see no key yet, and none at all, included)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnviz import run_trace
from attnviz.exactness import accumulator, exactness
from attnviz.masks import packed_doc_ids
from attnviz.stats import oracle

RTOL = 2e-6  # float32 rounding of a sum of exp terms (exp_shifted: 1e-7 relative each)


def _qkv(Lq, Lk, D, seed, spread=1.0):
    rng = np.random.default_rng(seed)
    return tuple((spread * rng.standard_normal((L, D))).astype(np.float32)
                 for L in (Lq, Lk, Lk))


CASES = {
    "prefill": (_qkv(29, 29, 8, 1), dict(q_block=6, kv_block=5)),
    "chunked": (_qkv(11, 40, 8, 2), dict(q_block=4, kv_block=7)),
    "chunked top-left": (_qkv(11, 40, 8, 3), dict(q_block=4, kv_block=7, q_offset=0)),
    "decode": (_qkv(1, 53, 16, 4), dict(q_block=1, kv_block=8)),
    "window": (_qkv(33, 33, 8, 5), dict(q_block=5, kv_block=4, window=7)),
    "sinks": (_qkv(30, 30, 8, 6), dict(q_block=5, kv_block=4, window=6, sinks=2)),
    "docs": (_qkv(31, 31, 8, 7), dict(q_block=4, kv_block=6, doc_ids=packed_doc_ids(31, 3))),
    "prefix": (_qkv(27, 27, 8, 8), dict(q_block=5, kv_block=4, prefix=9)),
    "sink logit": (_qkv(20, 20, 8, 9), dict(q_block=6, kv_block=4, sink_logits=1.5)),
    "no mask": (_qkv(17, 23, 8, 10), dict(q_block=5, kv_block=6, causal=False)),
    # rows before position 0 see no key at all (a chunk that starts before the cache)
    "rows that see none": (_qkv(12, 20, 8, 11), dict(q_block=4, kv_block=6, q_offset=-2)),
    "large logits": (_qkv(16, 24, 8, 12, 6.0), dict(q_block=4, kv_block=8)),
}


EPS32 = float(np.finfo(np.float32).eps)


def check_row(trace, lse_ref, O_ref, r):
    """Every step of row r: the invariant, each tile; at the last, the oracle's sums and O."""
    ex = None
    c = trace.config
    # float32 scores carry rounding ~ D eps |q||k| scale, which exp turns into relative error
    logit_err = c.D * EPS32 * c.scale * float((np.abs(trace.k) @ np.abs(trace.q[r])).max())
    def tol(j):  # j + 1 tiles summed, each a float32 sum of exp terms
        return RTOL * (j + 2) + 2 * logit_err

    for step in trace.row_history(r):
        ex = exactness(trace, r, step.n)
        ref_total = 0.0 if lse_ref[r] == -np.inf else math.exp(lse_ref[r] - ex.M)
        np.testing.assert_allclose(ex.total, ref_total, rtol=1e-12)  # the oracle's sum
        assert ex.tiles and ex.tiles[-1].n == step.n
        for t in ex.tiles:
            np.testing.assert_allclose(t.scaled, t.partial, rtol=tol(t.j), atol=0)
            if t.l == 0.0:  # no key seen yet: both sides are exactly 0
                assert t.partial == 0.0 and t.m == -np.inf
        # the correct loop's sides agree: the formula writes "=", never "≠"
        assert not ex.broken and "≠" not in ex.mathml()
        assert not any(r"\neq" in tex or "broken" in tex for tex in ex.latex())
        if ex.last:
            np.testing.assert_allclose(ex.tiles[-1].scaled, ex.total, rtol=tol(ex.tiles[-1].j),
                                       atol=0)
            np.testing.assert_allclose(ex.O_oracle, O_ref[r], rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(ex.O_softmax, O_ref[r], rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(ex.O, O_ref[r], rtol=1e-5 + 4 * logit_err, atol=1e-6)
            acc = accumulator(trace, r, step.n, O_ref)
            np.testing.assert_array_equal(acc.O, ex.O)
            l = trace.steps[step.n].l[r - trace.config.rows(step.i)[0]]
            if l > 0:  # O = acc / l (a row that saw nothing: O = 0)
                np.testing.assert_allclose(acc.acc_new / l, acc.O, rtol=1e-6, atol=1e-7)
            else:
                assert not acc.O.any() and not acc.acc_new.any()
        else:
            assert ex.O is None
    return ex


@pytest.mark.parametrize("case", CASES)
def test_sums_equal_the_oracles_in_every_mode_and_mask(case):
    (q, k, v), kw = CASES[case]
    trace = run_trace(q, k, v, **kw)
    O_ref, lse_ref = oracle(trace)
    for r in range(trace.config.Lq):
        check_row(trace, lse_ref, O_ref, r)


def test_a_row_that_sees_no_key_yet_and_one_that_sees_none():
    (q, k, v), kw = CASES["rows that see none"]
    trace = run_trace(q, k, v, **kw)
    O_ref, lse_ref = oracle(trace)
    none = check_row(trace, lse_ref, O_ref, 0)  # position -2: sees nothing, its block does
    assert none.sees_none and none.M == -np.inf and none.total == 0.0
    assert none.last and not none.O.any() and not none.O_oracle.any()
    assert none.tiles[-1].scaled == 0 == none.tiles[-1].partial
    # a row whose first visited tile is masked for it has m = -inf, l = 0 after that tile
    (q, k, v), kw = CASES["window"]
    trace = run_trace(q, k, v, **kw)
    found = False
    for s in trace.steps:
        i0 = trace.config.rows(s.i)[0]
        for t in np.flatnonzero(s.l == 0):
            ex = exactness(trace, i0 + t, s.n)
            assert ex.seen_nothing and ex.tiles[-1].scaled == 0 == ex.tiles[-1].partial
            found = True
    assert found, "no row with nothing seen yet in the window case"


def test_exactness_asks_for_a_row_of_the_steps_block():
    (q, k, v), kw = CASES["prefill"]
    trace = run_trace(q, k, v, **kw)
    with pytest.raises(ValueError, match="row 20 is not in Q block 0"):
        exactness(trace, 20, 0)


def test_under_a_bug_the_two_sides_part():
    (q, k, v), kw = CASES["prefill"]
    trace = run_trace(q, k, v, bug="no_l_rescale", **kw)
    parted = [abs(t.scaled - t.partial) > 1e-3 * t.partial
              for s in trace.steps for r in range(*trace.config.rows(s.i))
              for t in exactness(trace, r, s.n).tiles[-1:]]
    assert any(parted)


def _sides(tex: str) -> tuple[float, str, float]:
    """The numbers line's last relation "a \\;=\\; b" or "a \\;\\neq\\; b" of an
    equation's LaTeX: (a, relation, b)."""
    numbers = tex.split(r"\\")[1]
    rel = r"\neq" if r"\neq" in numbers else "="
    left, right = numbers.split(r"\;\neq\;" if rel != "=" else r"\;=\;")
    a = float(left.split("=")[-1].strip())
    b = float(right.replace(r"\end{aligned}", "").split(r"\quad")[0].strip())
    return a, rel, b


@pytest.mark.parametrize("bug", ["no_l_rescale", "no_acc_rescale", "no_max_carry"])
def test_under_a_bug_the_formula_writes_neq_between_unequal_sides(bug):
    """Never "=" between numbers that differ beyond float32 rounding: the formula writes
    "≠" and "invariant broken" (LaTeX and MathML) exactly where the two sides part."""
    (q, k, v), kw = CASES["prefill"]
    trace = run_trace(q, k, v, bug=bug, **kw)
    seen = {"=": 0, r"\neq": 0}
    for s in trace.steps:
        for r in range(*trace.config.rows(s.i)):
            ex = exactness(trace, r, s.n)
            for tex in ex.latex():
                a, rel, b = _sides(tex)
                differ = abs(a - b) > 1e-3 * max(abs(a), abs(b))  # 6 digits each, as shown
                assert rel == (r"\neq" if differ else "="), (r, s.n, tex)
                assert ("invariant broken" in tex) == differ
                seen[rel] += 1
            assert ex.mathml().count("<mo>≠</mo>") == sum(r"\neq" in t for t in ex.latex())
            assert ex.broken == any(r"\neq" in t for t in ex.latex())
    if bug == "no_l_rescale":  # its sides part as soon as a max moves
        assert seen[r"\neq"] and seen["="]


def test_the_learners_no_l_rescale_row():
    """A learner saw "= 23.2921 = 15.3223" here (prefill L=128, no mask, row 1 of step 4)."""
    from attnviz.scenarios import one_head
    q, k, v = one_head("random", 128, 128, 16, seed=0)
    trace = run_trace(q, k, v, q_block=16, kv_block=16, causal=False, bug="no_l_rescale")
    n = 3
    r = trace.config.rows(trace.steps[n].i)[0] + 1
    ex = exactness(trace, r, n)
    t = ex.tiles[-1]
    assert abs(t.scaled - t.partial) > 0.1 * t.partial  # they differ by a third here
    assert f"{t.scaled:.6g} \\;\\neq\\; {t.partial:.6g}" in ex.latex()[0]
    assert (f"<mn>{t.scaled:.6g}</mn><mo>≠</mo><mn>{t.partial:.6g}</mn>" in ex.mathml()
            and "invariant\u00a0broken" in ex.mathml())


def test_the_formula_carries_the_numbers():
    (q, k, v), kw = CASES["decode"]
    trace = run_trace(q, k, v, **kw)
    n = len(trace.steps) - 1
    ex = exactness(trace, 0, n)
    tex, mml = " ".join(ex.latex()), ex.mathml()
    assert len(ex.equations()) == 2  # the invariant, then the full denominators at the end
    assert f"{ex.total:.6g}" in tex and f"<mn>{ex.total:.6g}</mn>" in mml
    assert f"{ex.tiles[-1].l:.6g}" in tex
    assert len(exactness(trace, 0, 0).equations()) == 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(Lq=st.integers(1, 20), extra=st.integers(0, 24), D=st.sampled_from([1, 4, 8]),
       Br=st.integers(1, 7), Bc=st.integers(1, 9), seed=st.integers(0, 2**16),
       mask=st.sampled_from(["causal", "none", "window", "sinks", "docs", "prefix",
                             "sink logit"]),
       top_left=st.booleans(), W=st.integers(1, 12))
def test_invariant_on_random_geometries(Lq, extra, D, Br, Bc, seed, mask, top_left, W):
    Lk = Lq + extra
    q, k, v = _qkv(Lq, Lk, D, seed, 2.0)
    kw = dict(q_block=Br, kv_block=Bc, causal=mask != "none",
              q_offset=0 if top_left and mask != "none" else None)
    if mask in ("window", "sinks"):
        kw["window"] = W
    if mask == "sinks":
        kw["sinks"] = 2
    if mask == "docs":
        kw["doc_ids"] = packed_doc_ids(Lk, 3)
    if mask == "prefix":
        kw["prefix"] = max(1, Lk // 3)
    if mask == "sink logit":
        kw["sink_logits"] = float(seed % 5) - 2.0
    trace = run_trace(q, k, v, **kw)
    O_ref, lse_ref = oracle(trace)
    rows = {0, Lq - 1, seed % Lq}
    for r in rows:
        check_row(trace, lse_ref, O_ref, r)


def test_the_figure_draws_the_panels_numbers():
    """The why figure's plots span the numbers they show: the score row's range and M, the
    accumulator's four series; a third plot (O beside the oracle) only at the row's end."""
    from attnviz.why_images import why_figure

    (q, k, v), kw = CASES["window"]
    trace = run_trace(q, k, v, **kw)
    O_ref, _ = oracle(trace)
    for n in (0, trace.block_done_after[1]):
        r = trace.config.rows(trace.steps[n].i)[0] + 2
        ex, acc = exactness(trace, r, n), accumulator(trace, r, n, O_ref)
        fig = why_figure(ex, acc)
        s = ex.s[ex.visible]
        ps, pa = fig.plots["scores"], fig.plots["acc"]
        assert ps.y.lo <= min(s.min(), 0) and ps.y.hi >= max(s.max(), ex.M)
        for y in (acc.acc_old, acc.scaled_old, acc.PV, acc.acc_new):
            assert pa.y.lo <= y.min() and pa.y.hi >= y.max()
        assert ("O" in fig.plots) == ex.last == fig.meta["last"]
        assert fig.alt == f"why it is exact: row {r} at step {n + 1}"
