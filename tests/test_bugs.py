"""The bug lab: every classic mistake breaks at least one case against the float64 oracle,
while bug=None stays exact and bit for bit the jitted driver's trace."""
from __future__ import annotations

import numpy as np
import pytest

from attnviz import run_trace
from attnviz.bugs import BUGS, changes_nothing, check_bug
from attnviz.stats import oracle
from kernels.tile import PARTIAL, SKIPPED, finalize, init_state, mask_tile_class, tile_update

NAMES = ("no_max_carry", "no_acc_rescale", "no_l_rescale", "normalize_each_tile", "top_left",
         "window_off_by_one", "no_max_subtraction")


def _qkv(Lq, Lk, D, seed, spread=1.0):
    rng = np.random.default_rng(seed)
    q = (spread * rng.standard_normal((Lq, D))).astype(np.float32)
    k = (spread * rng.standard_normal((Lk, D))).astype(np.float32)
    v = rng.standard_normal((Lk, D)).astype(np.float32)
    return q, k, v


# (inputs, keywords): ragged sizes, several tiles per row, each mode and mask family
CASES = {
    "prefill causal": (_qkv(45, 45, 12, 1, 2.0), dict(q_block=8, kv_block=7)),
    "chunked bottom-right": (_qkv(13, 50, 8, 2, 2.0), dict(q_block=4, kv_block=6)),
    "decode": (_qkv(1, 61, 16, 3, 2.0), dict(q_block=1, kv_block=9)),
    "window": (_qkv(40, 40, 8, 4, 2.0), dict(q_block=8, kv_block=5, window=11)),
    "sinks + window": (_qkv(37, 37, 8, 5, 2.0), dict(q_block=6, kv_block=5, window=9,
                                                     sinks=3)),
    "sink logit": (_qkv(30, 30, 8, 6, 2.0), dict(q_block=7, kv_block=4, sink_logits=0.5)),
    "large logits": (_qkv(24, 40, 8, 7, 25.0), dict(q_block=8, kv_block=8)),
}


def _error(trace):
    O_ref, _ = oracle(trace)
    with np.errstate(invalid="ignore", over="ignore"):
        return float(np.abs(trace.out - O_ref).max()), bool(np.isfinite(trace.out).all())


def test_names_are_the_stable_public_ones():
    assert tuple(BUGS) == NAMES
    assert all(isinstance(d, str) and d for d in BUGS.values())
    assert "overflow" in BUGS["no_max_carry"] and "exact in exact arithmetic" in BUGS[
        "no_max_carry"]


@pytest.mark.parametrize("case", CASES)
def test_no_bug_is_exact(case):
    (q, k, v), kw = CASES[case]
    err, finite = _error(run_trace(q, k, v, bug=None, **kw))
    assert finite and err < 1e-5


@pytest.mark.parametrize("bug", NAMES)
def test_each_bug_breaks_some_case(bug):
    broken = []
    for case, ((q, k, v), kw) in CASES.items():
        trace = run_trace(q, k, v, bug=bug, **kw)
        assert trace.bug == bug
        err, finite = _error(trace)
        if not finite or err > 1e-3:
            broken.append(case)
            O_ref, _ = oracle(trace)
            n = trace.first_departure(O_ref)
            assert n is not None and n in trace.block_done_after.values()
    assert broken, f"{bug} left every case exact"


def test_no_max_carry_is_exact_with_small_logits_and_overflows_with_large():
    (q, k, v), kw = CASES["prefill causal"]
    q, k = q / 4, k / 4  # logits of a few units: alpha = exp(m_old - m_new) stays finite
    err, finite = _error(run_trace(q, k, v, bug="no_max_carry", **kw))
    assert finite and err < 1e-4
    (q, k, v), kw = CASES["large logits"]
    trace = run_trace(q, k, v, bug="no_max_carry", **kw)
    assert (~np.isfinite(trace.out)).any() or _error(trace)[0] > 1e-3
    assert any((s.alpha > 1).any() for s in trace.steps)  # the tell-tale: alpha above 1


def test_mask_bugs_bend_only_the_mask_given_to_the_driver():
    (q, k, v), kw = CASES["chunked bottom-right"]
    trace = run_trace(q, k, v, bug="top_left", **kw)
    assert trace.config.mask.q_offset == 50 - 13  # the true mask, which the oracle uses
    assert trace.driver.mask.q_offset == 0
    assert (trace.tile_status != run_trace(q, k, v, **kw).tile_status).any()
    (q, k, v), kw = CASES["window"]
    trace = run_trace(q, k, v, bug="window_off_by_one", **kw)
    assert trace.config.mask.window == 11 and trace.driver.mask.window == 12
    # where the bug cannot show, the lab says why
    (q, k, v), kw = CASES["prefill causal"]
    assert changes_nothing(run_trace(q, k, v, **kw).config.mask, "top_left")
    assert changes_nothing(run_trace(q, k, v, **kw).config.mask, "window_off_by_one")
    assert changes_nothing(trace.config.mask, "window_off_by_one") is None


def test_unknown_name_lists_the_valid_ones():
    (q, k, v), kw = CASES["decode"]
    with pytest.raises(ValueError, match="unknown bug 'no_such'.*no_max_carry.*no_max_subtr"):
        run_trace(q, k, v, bug="no_such", **kw)
    with pytest.raises(ValueError, match="valid names"):
        check_bug(3)


@pytest.mark.parametrize("case", CASES)
def test_no_bug_is_bit_identical_to_the_jitted_loop(case):
    """The loop written out here with kernels.tile's routines, as the driver was before the
    bug lab: every recorded number and the output, bit for bit."""
    (q, k, v), kw = CASES[case]
    trace = run_trace(q, k, v, **kw)
    c = trace.config
    mk, sink = c.mask.geometry(), c.mask.sink_array(1)[0]
    steps = iter(trace.steps)
    for i in range(c.Tr):
        (i0, i1), qpos = c.rows(i), c.qpos(i)
        m, l = np.empty(i1 - i0, np.float32), np.empty(i1 - i0, np.float32)
        acc = np.empty((i1 - i0, c.D), np.float32)
        init_state(m, l, acc, sink)
        for j in range(c.Tc):
            k0, k1 = c.keys(j)
            cls = mask_tile_class(qpos, k0, k1, c.Lk, mk)
            if cls == SKIPPED:
                continue
            S = np.empty((i1 - i0, k1 - k0), np.float32)
            P, alpha = np.empty_like(S), np.empty(i1 - i0, np.float32)
            tile_update(q[i0:i1], k[k0:k1], v[k0:k1], qpos, k0, c.Lk, mk, cls == PARTIAL,
                        np.float32(c.scale), m, l, acc, S, P, alpha)
            s = next(steps)
            assert (s.i, s.j) == (i, j)
            for got, want in ((s.m, m), (s.l, l), (s.alpha, alpha), (s.s_max, S.max(1)),
                              (s.p_sum, P.sum(1, dtype=np.float32))):
                np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(s.acc_norm, np.linalg.norm(acc, axis=1))
            S2, P2 = trace.tiles(s.n)
            np.testing.assert_array_equal(S2, S)
            np.testing.assert_array_equal(P2, P)
        O, lse = np.empty_like(acc), np.empty(i1 - i0, np.float32)
        finalize(m, l, acc, O, lse)
        np.testing.assert_array_equal(trace.out[i0:i1], O)
        np.testing.assert_array_equal(trace.lse[i0:i1], lse)
    assert next(steps, None) is None


@pytest.mark.parametrize("bug", [None, *NAMES])
def test_replay_gives_the_accumulator_the_loop_had(bug):
    (q, k, v), kw = CASES["sinks + window"]
    trace = run_trace(q, k, v, bug=bug, **kw)
    before = {}
    for s in trace.steps:
        rep = trace.replay(s.n)
        np.testing.assert_array_equal(np.linalg.norm(rep.acc_new, axis=1), s.acc_norm)
        if s.i in before:  # acc_new of a step is acc_old of the block's next step
            np.testing.assert_array_equal(rep.acc_old, before[s.i])
        else:
            assert not rep.acc_old.any()
        before[s.i] = rep.acc_new
        if bug not in ("no_acc_rescale", "normalize_each_tile"):
            with np.errstate(invalid="ignore", over="ignore"):
                np.testing.assert_allclose(rep.acc_new, rep.alpha[:, None] * rep.acc_old
                                           + rep.PV, rtol=1e-5, atol=1e-6)
    for i, n in trace.block_done_after.items():
        if bug in (None, "no_acc_rescale", "no_l_rescale", "top_left", "window_off_by_one"):
            i0, i1 = trace.config.rows(i)
            l = trace.steps[n].l
            np.testing.assert_allclose(trace.replay(n).acc_new / l[:, None],
                                       trace.out[i0:i1], rtol=1e-6, atol=1e-7)


def test_first_departure_is_none_without_a_bug():
    for (q, k, v), kw in CASES.values():
        trace = run_trace(q, k, v, **kw)
        assert trace.first_departure(oracle(trace)[0]) is None
