"""The traced backward: the same numbers as the kernel and the float64 oracle, in the
backward's own loop order, with P equal to the forward's P~ / l and every accumulation
matching its recorded tiles."""
from __future__ import annotations

import numpy as np
import pytest

from attnviz.backward_trace import memory, run_backward_trace, step_flops, total_flops
from attnviz.masks import packed_doc_ids
from attnviz.reference import attention_backward_reference
from kernels import streaming_attention, streaming_attention_backward
from tests.helpers import rel_err

MASKS = [{}, {"window": 9}, {"window": 8, "sinks": 3}, {"prefix": 12}, {"causal": False},
         {"doc_ids": packed_doc_ids(45, 3)}, {"sink_logits": 0.7}, {"q_offset": 0}]


def _inputs(g, Lq, Lk, D, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((g, Lq, D)).astype(np.float32)
    k, v = (rng.standard_normal((Lk, D)).astype(np.float32) for _ in range(2))
    dout = rng.standard_normal((g, Lq, D)).astype(np.float32)
    return q, k, v, dout


def _kernel_mask(mask, g):
    kw = dict(mask)
    if "sink_logits" in kw:
        kw["sink_logits"] = np.full(g, kw["sink_logits"], np.float32)
    return kw


@pytest.mark.parametrize("mask", MASKS, ids=[",".join(m) or "causal" for m in MASKS])
@pytest.mark.parametrize("g", [1, 3])
def test_trace_equals_kernel_and_oracle(mask, g):
    Lq = 33 if "q_offset" in mask else 45
    q, k, v, dout = _inputs(g, Lq, 45, 16, seed=g + len(mask))
    t = run_backward_trace(q, k, v, dout, q_block=8, kv_block=7, **mask)
    kw = _kernel_mask(mask, g)
    out, lse = streaming_attention(q[None], k[None, None], v[None, None], return_lse=True,
                                   **kw)
    dq, dk, dv = streaming_attention_backward(q[None], k[None, None], v[None, None], out, lse,
                                              dout[None], q_block=8, kv_block=7, **kw)
    want = attention_backward_reference(q[None], k[None, None], v[None, None], dout[None],
                                        **kw)
    refs = (want[0][0], want[1][0, 0], want[2][0, 0])  # [g, Lq, D], [Lk, D], [Lk, D]
    for got, kern, ref in zip((t.dq, t.dk, t.dv), (dq[0], dk[0, 0], dv[0, 0]), refs,
                              strict=True):
        assert rel_err(got, kern.astype(np.float64)) <= 1e-6
        assert rel_err(got, ref) <= 1e-5


def test_loop_order_kv_outer_and_skipped_tiles_never_visited():
    q, k, v, dout = _inputs(2, 40, 40, 8, seed=1)
    t = run_backward_trace(q, k, v, dout, window=10, q_block=8, kv_block=8)
    order = [(s.j, s.h, s.i) for s in t.steps]
    assert order == sorted(order)  # j outer, then the head, then i
    visited = {(s.i, s.j) for s in t.steps}
    for i, j in np.ndindex(t.tile_status.shape):
        assert ((i, j) in visited) == (t.tile_status[i, j] != "skipped")
    assert "skipped" in t.tile_status and "partial" in t.tile_status


@pytest.mark.parametrize("mask", [{}, {"window": 6, "sinks": 2}, {"sink_logits": -0.5}])
def test_each_step_p_is_the_forwards_p_over_l_and_accumulations_add_up(mask):
    q, k, v, dout = _inputs(2, 30, 30, 8, seed=3)
    t = run_backward_trace(q, k, v, dout, q_block=8, kv_block=8, **mask)
    c = t.config
    for s in t.steps:
        i0, i1 = c.rows(s.i)
        k0, k1 = c.keys(s.j)
        np.testing.assert_allclose(s.P, s.P_fwd, rtol=2e-5, atol=1e-7)
        P, dS = s.P.astype(np.float64), s.dS.astype(np.float64)
        dO, Q = t.dout[s.h, i0:i1].astype(np.float64), t.q[s.h, i0:i1].astype(np.float64)
        K, V = t.k[k0:k1].astype(np.float64), t.v[k0:k1].astype(np.float64)
        np.testing.assert_allclose(s.dP, dO @ V.T, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s.dS, P * (s.dP - t.D[s.h, i0:i1, None]), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(s.dV - s.dV_before, P.T @ dO, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(s.dK - s.dK_before, c.scale * dS.T @ Q, rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(s.dQ - s.dQ_before, c.scale * dS @ K, rtol=1e-4,
                                   atol=1e-5)
    np.testing.assert_allclose(t.D, (t.dout.astype(np.float64) * t.out).sum(-1), rtol=1e-5,
                               atol=1e-6)


def test_flops_are_five_gemms_against_two_and_memory_grows_for_stored_p():
    q, k, v, dout = _inputs(1, 50, 50, 16, seed=2)
    t = run_backward_trace(q, k, v, dout, q_block=16, kv_block=16)
    bwd, fwd = total_flops(t)
    assert bwd / fwd == 2.5
    visible_tile_area = sum(s.rows * s.keys for s in t.steps)
    assert fwd == 4 * 16 * visible_tile_area
    assert step_flops(t.steps[0], 16) == (10 * t.steps[0].rows * t.steps[0].keys * 16,
                                          4 * t.steps[0].rows * t.steps[0].keys * 16)
    small, big = (memory(run_backward_trace(q[:, :L], k[:L], v[:L], dout[:, :L]).config, 8, 2)
                  for L in (20, 40))
    assert big.stores_P > 3.5 * small.stores_P  # grows with Lq * Lk
    assert big.streaming < 2.1 * small.streaming  # grows with L at most


def test_bad_input():
    q, k, v, dout = _inputs(1, 10, 10, 8, seed=0)
    with pytest.raises(ValueError, match="dout must have the shape of q"):
        run_backward_trace(q, k, v, dout[:, :5])
    with pytest.raises(ValueError, match="q must be"):
        run_backward_trace(q[None], k, v, dout)
    bad = dout.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="dout contains NaN"):
        run_backward_trace(q, k, v, bad)


def test_live_math_writes_the_recorded_numbers():
    from attnviz.backward_math import tile_math
    from attnviz.livemath import fmt

    q, k, v, dout = _inputs(2, 30, 30, 8, seed=6)
    t = run_backward_trace(q, k, v, dout, window=12, q_block=8, kv_block=8)
    c = t.config
    for n in (0, len(t.steps) // 2, len(t.steps) - 1):
        s = t.steps[n]
        (i0, i1), k0 = c.rows(s.i), c.keys(s.j)[0]
        r, key = i1 - 1, k0  # the last row sees key k0 unless the window hides it
        tm = tile_math(t, n, r, key)
        a, b = r - i0, key - k0
        assert (tm.p, tm.dP, tm.dS, tm.D) == (s.P[a, b], s.dP[a, b], s.dS[a, b], t.D[s.h, r])
        assert tm.dQ_new == pytest.approx(float(np.linalg.norm(s.dQ[a])))
        tex = " ".join(tm.latex())
        assert fmt(tm.dS) in tex and fmt(tm.dV_new) in tex and fmt(tm.dK_old) in tex
        if tm.masked:
            assert tm.p == 0 and tm.dS == 0 and "masked" in tex
    with pytest.raises(ValueError, match="not in KV block"):
        tile_math(t, 0, 0, c.Lk - 1)


def test_live_math_calls_a_rounding_level_dS_zero():
    import dataclasses

    from attnviz.backward_math import tile_math

    q, k, v, dout = _inputs(1, 24, 24, 8, seed=2)
    t = run_backward_trace(q, k, v, dout, causal=True, q_block=8, kv_block=8)
    s = t.steps[0]  # the diagonal tile (0, 0): row 0 sees key 0 only
    assert (s.i, s.j) == (0, 0)
    one = tile_math(t, 0, 0, 0)  # P = 1 and dP = D in exact arithmetic
    assert one.p == pytest.approx(1.0, abs=1e-6)
    assert abs(one.dS) <= 8 * np.finfo(np.float32).eps * max(abs(one.dP), abs(one.D))
    assert (r"\approx 0" in " ".join(one.latex())) == (one.dS != 0)
    assert ("0 up to float32 rounding" in one.rounding_note) == (one.dS != 0)
    # the last row sees all 8 keys: its dS are real, never called rounding
    for key in range(8):
        tm = tile_math(t, 0, 7, key)
        assert abs(tm.dS) > 1e-4 and r"\approx" not in " ".join(tm.latex())
        assert tm.rounding_note == ""
    # the rule itself, on the learner's numbers: 1·(1.85623 − 1.85623) = 1.19209e-7
    seen = dataclasses.replace(one, p=1.0, dP=1.85623, D=1.85623, dS=1.19209e-7)
    assert seen.dS_is_rounding and r"= 1.19209 \times 10^{-7} \approx 0" in " ".join(
        seen.latex()).replace("{,}", "")
    assert seen.rounding_note.startswith("dS = 1.19e-07 here is 0 up to float32 rounding")
    assert not dataclasses.replace(seen, dS=1e-3).dS_is_rounding
    assert not dataclasses.replace(seen, dS=0.0).dS_is_rounding
