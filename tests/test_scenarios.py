"""The input scenarios: deterministic, head 0 independent of the head counts, and each one
really produces the behaviour it promises in the traced algorithm."""
import numpy as np
import pytest

from attnviz import run_trace
from attnviz.masks import visible_mask
from attnviz.reference import attention_reference
from attnviz.scenarios import (
    F32_EXP_OVERFLOW,
    SCENARIOS,
    SINK_SCORE,
    SPIKE_SCORE,
    generate,
    late_position,
    one_head,
)


def _rescaled(step):
    """Rows of a step whose old state was rescaled (alpha < 1 with something to rescale)."""
    return (step.alpha < 1) & np.isfinite(step.m_before)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_shapes_dtype_and_determinism(name):
    q, k, v = generate(name, 5, 9, 8, seed=3, B=2, Hq=4, Hkv=2)
    assert q.shape == (2, 4, 5, 8) and k.shape == v.shape == (2, 2, 9, 8)
    assert q.dtype == k.dtype == v.dtype == np.float32
    again = generate(name, 5, 9, 8, seed=3, B=2, Hq=4, Hkv=2)
    for a, b in zip((q, k, v), again, strict=False):
        np.testing.assert_array_equal(a, b)
    for a in (q, k, v):
        assert np.isfinite(a).all()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_head_zero_does_not_depend_on_head_counts(name):
    q1, k1, v1 = one_head(name, 6, 10, 8, seed=1)
    q, k, v = generate(name, 6, 10, 8, seed=1, B=3, Hq=8, Hkv=2)
    np.testing.assert_array_equal(q[0, 0], q1)
    np.testing.assert_array_equal(k[0, 0], k1)
    np.testing.assert_array_equal(v[0, 0], v1)


def test_seed_changes_the_inputs():
    a = one_head("random", 4, 4, 8, seed=0)[0]
    b = one_head("random", 4, 4, 8, seed=1)[0]
    assert not np.array_equal(a, b)


def test_unknown_scenario_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        generate("nope", 2, 2, 4)


def test_sink_key_zero_scores_the_same_for_every_query_and_never_rescales():
    D = 32
    q, k, v = one_head("sink", 96, 96, D, seed=0)
    scores = q @ k.T / np.sqrt(D)
    np.testing.assert_allclose(scores[:, 0], SINK_SCORE, atol=1e-4)
    assert (scores[:, 1:] < SINK_SCORE - 3).all()
    trace = run_trace(q, k, v, q_block=16, kv_block=16)
    assert sum(_rescaled(s).sum() for s in trace.steps) == 0


def test_late_spike_forces_a_big_rescale_exactly_where_rows_meet_it():
    L, Bc, D = 128, 16, 32
    q, k, v = one_head("late_spike", L, L, D, seed=0)
    p = late_position(L)
    trace = run_trace(q, k, v, q_block=16, kv_block=Bc)
    for s in trace.steps:
        i0, _ = trace.config.rows(s.i)
        rows = np.arange(i0, i0 + len(s.m))
        meets = (s.j == p // Bc) & (rows >= p)  # the tile holding the spike, rows that see it
        big = _rescaled(s) & (s.alpha < np.exp(-5))
        np.testing.assert_array_equal(big, meets & (s.j > 0))
        if meets.any():
            np.testing.assert_allclose(s.m[meets], SPIKE_SCORE, atol=1e-4)


def test_rising_scores_rescale_on_every_tile_a_row_sees_new_keys_in():
    q, k, v = one_head("rising", 128, 128, 16, seed=0)
    trace = run_trace(q, k, v, q_block=16, kv_block=16)
    for s in trace.steps:
        sees_new = np.isfinite(s.m_before) & np.isfinite(s.s_max)
        assert (s.alpha[sees_new] < 1).all()


def test_large_logits_exceed_float32_exp_range_but_the_trace_stays_exact():
    D = 16
    q, k, v = one_head("large_logits", 64, 64, D, seed=0)
    trace = run_trace(q, k, v, q_block=16, kv_block=16)
    assert max(float(s.s_max.max()) for s in trace.steps) > F32_EXP_OVERFLOW
    with np.errstate(over="ignore"):
        assert np.isinf(np.exp(np.float32(q @ k.T / np.sqrt(D)))).any()
    O, lse = attention_reference(q, k, v, causal=True)
    assert np.isfinite(trace.out).all()
    np.testing.assert_allclose(trace.out, O, atol=1e-4)
    np.testing.assert_allclose(trace.lse, lse, rtol=1e-5, atol=1e-4)  # logits of ~100


def test_equal_scores_make_l_count_visible_keys_and_O_the_mean_of_visible_V():
    L = 80
    q, k, v = one_head("equal", L, L, 8, seed=0)
    trace = run_trace(q, k, v, causal=True, window=20, q_block=16, kv_block=16)
    vis = visible_mask(L, L, causal=True, q_offset=0, window=20)
    l_final = np.concatenate([trace.steps[trace.block_done_after[i]].l
                              for i in range(trace.config.Tr)])
    np.testing.assert_array_equal(l_final, vis.sum(axis=1))
    mean_v = (vis[:, :, None] * v[None]).sum(axis=1) / vis.sum(axis=1)[:, None]
    np.testing.assert_allclose(trace.out, mean_v, atol=1e-5)
