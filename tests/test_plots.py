"""The figure builders and the live math, read back: what they draw is what the trace holds."""
import json
import math

import numpy as np
import pytest

from attnviz import plots, run_trace
from attnviz.livemath import fmt, row_math
from attnviz.masks import tile_status, visible_mask
from attnviz.scenarios import late_position, one_head
from attnviz.stats import memory_series, oracle, output_error


def _trace(name="random", Lq=64, Lk=64, D=8, Br=16, Bc=16, **mask):
    q, k, v = one_head(name, Lq, Lk, D, seed=0)
    return run_trace(q, k, v, q_block=Br, kv_block=Bc, **mask)


def _by_name(fig, name):
    return next(t for t in fig.data if t.name == name)


def _shape(fig, name):
    return next(s for s in fig.layout.shapes if s.name == name)


@pytest.fixture(scope="module")
def causal():
    return _trace(Lq=80, Lk=112, Br=16, Bc=32)  # ragged, bottom-right causal


def test_tile_map_colours_every_tile_by_its_class(causal):
    fig = plots.tile_map(causal, 0)
    z = np.array(_by_name(fig, "tiles").z)
    c = causal.config
    expected = tile_status(c.Lq, c.Lk, c.Br, c.Bc, causal=True, q_offset=c.mask.q_offset)
    assert z.shape == (c.Tr, c.Tc)
    for name, code in plots.STATUS_CODE.items():
        assert (z == code).sum() == (expected == name).sum()
    assert (z == 0).sum() == causal.counts["skipped"] > 0


@pytest.mark.parametrize("n", [0, 3, 7])
def test_tile_map_outlines_step_n_and_shades_the_tiles_visited_so_far(causal, n):
    fig = plots.tile_map(causal, n)
    s = causal.steps[n]
    cur = _shape(fig, "current")
    assert (cur.x0 + cur.x1) / 2 == s.j and (cur.y0 + cur.y1) / 2 == s.i
    visited = np.array(_by_name(fig, "visited").z, dtype=float)
    assert np.nansum(visited) == n + 1
    for t in causal.steps[: n + 1]:
        assert visited[t.i, t.j] == 1
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # row 0 on top


def test_tile_map_click_targets_carry_the_step_of_each_tile(causal):
    click = _by_name(plots.tile_map(causal, 0), "click")
    for (n, i, j), x, y in zip(click.customdata, click.x, click.y, strict=False):
        assert (x, y) == (j, i)
        assert n == (causal.step_index(i, j) if causal.tile_status[i, j] != "skipped" else -1)
    assert len(click.customdata) == causal.config.Tr * causal.config.Tc


def test_step_tiles_blank_exactly_the_masked_scores(causal):
    c = causal.config
    n = next(s.n for s in causal.steps if s.kind == "partial")
    fig = plots.step_tiles(causal, n)
    S = np.array(_by_name(fig, "S").z, dtype=float)  # None -> nan
    P = np.array(_by_name(fig, "P~").z, dtype=float)
    s = causal.steps[n]
    (i0, i1), (k0, k1) = c.rows(s.i), c.keys(s.j)
    vis = visible_mask(c.Lq, c.Lk, causal=True, q_offset=c.mask.q_offset)[i0:i1, k0:k1]
    np.testing.assert_array_equal(np.isfinite(S), vis)
    S_ref, P_ref = causal.tiles(n)
    np.testing.assert_allclose(S[vis], S_ref[vis], rtol=1e-6)
    np.testing.assert_allclose(P, P_ref, rtol=1e-6)
    assert np.nanmax(P) <= 1.0
    assert list(_by_name(fig, "S").x) == list(range(k0, k1))


def test_row_history_draws_m_and_l_and_marks_the_big_rescale():
    L = 128
    trace = _trace("late_spike", Lq=L, Lk=L, D=16)
    r = L - 1  # the last row sees the spike at 3/4 of the sequence
    n = trace.block_done_after[r // 16]
    fig = plots.row_history(trace, n, r)
    steps = trace.row_history(r)
    t = r - trace.config.rows(steps[0].i)[0]
    m, l = _by_name(fig, f"m (row {r})"), _by_name(fig, f"l (row {r})")
    assert list(m.x) == [s.j for s in steps]
    np.testing.assert_allclose(m.y, [s.m[t] for s in steps])
    np.testing.assert_allclose(l.y, [s.l[t] for s in steps])
    resc = _by_name(fig, "rescale (alpha < 1)")
    expected = [s for s in steps if s.alpha[t] < 1 and np.isfinite(s.m_before[t])]
    assert list(resc.x) == [s.j for s in expected]
    spike = [s for s in expected if s.j == late_position(L) // 16]
    assert len(spike) == 1 and spike[0].alpha[t] < np.exp(-5)
    # only the steps so far: halfway, fewer points
    half = plots.row_history(trace, steps[2].n, r)
    assert len(_by_name(half, f"m (row {r})").x) == 3
    assert len(plots.row_history(trace, n, r, all_rows=True).data) > len(fig.data)


def test_output_rows_show_only_finished_rows_and_their_error():
    trace = _trace(Lq=64, Lk=64, D=8)
    O_ref, lse_ref = oracle(trace)
    n = trace.block_done_after[1]  # blocks 0 and 1 finished
    done, err_o, _ = output_error(trace, O_ref, lse_ref, n)
    assert done.sum() == 32 and done[:32].all()
    fig = plots.output_rows(trace, n, done, err_o)
    O = np.array(_by_name(fig, "O").z, dtype=float)
    assert np.isfinite(O[:32]).all() and np.isnan(O[32:]).all()
    np.testing.assert_allclose(O[:32], trace.out[:32])
    err = _by_name(fig, "error")
    assert list(err.x) == list(range(32))
    assert max(err.y) < 1e-5


def test_memory_chart_marks_ram_and_current_length_and_plots_the_model():
    from attnviz import memory

    Ls = [128, 1024, 8192, 131072]
    series = memory_series(lambda L: memory.Shape(1, 8, 2, L, L, 64), Ls, 64, 64, 2)
    fig = plots.memory_chart(Ls, series, ram=2**34, current_L=1024,
                             measured={"standard": (1024, 12345)})
    assert list(_by_name(fig, "this machine's RAM (16 GiB)").y) == [2**34, 2**34]
    assert list(_by_name(fig, "current L = 1024").x) == [1024, 1024]
    std = _by_name(fig, "standard (S/P matrix)")
    assert list(std.y) == [4 * 8 * L * L for L in Ls]
    assert list(_by_name(fig, "measured: standard").y) == [12345]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"


def test_crossover_is_where_streaming_stays_faster():
    rows = [{"L": 256, "standard_s": 1.0, "streaming_s": 2.0},
            {"L": 512, "standard_s": 2.0, "streaming_s": 1.5},
            {"L": 1024, "standard_s": 5.0, "streaming_s": 3.0},
            {"L": 2048, "standard_s": None, "streaming_s": 9.0,
             "standard_skipped": "memory guard"}]
    assert plots.crossover(rows) == 512
    fig = plots.crossover_chart(rows)
    assert list(_by_name(fig, "crossover: streaming faster from L = 512").x) == [512, 512]
    assert list(_by_name(fig, "standard refused (memory guard)").x) == [2048]
    assert plots.crossover(rows[:1]) is None


def test_block_sweep_outlines_the_best_cell():
    g = np.array([[1.0, 2.0], [np.nan, 5.0]])
    fig = plots.block_sweep_chart([16, 32], [64, 128], g)
    best = _shape(fig, "best")
    assert ((best.x0 + best.x1) / 2, (best.y0 + best.y1) / 2) == (1, 1)
    json.loads(fig.to_json())  # NaN cells are serializable


# --- live math --------------------------------------------------------------------------------

def test_fmt():
    assert fmt(-math.inf) == r"-\infty"
    assert fmt(1.5) == "1.5"
    assert fmt(1.2345678e-9) == r"1.23457 \times 10^{-9}"


def test_live_math_substitutes_the_recorded_numbers_of_the_row():
    trace = _trace("late_spike", Lq=128, Lk=128, D=16)
    r = 127
    n = next(s.n for s in trace.row_history(r)  # the big rescale
             if s.alpha[-1] < 1e-2 and np.isfinite(s.m_before[-1]))
    rm = row_math(trace, n, r)
    s = trace.steps[n]
    t = r - trace.config.rows(s.i)[0]
    assert (rm.m_before, rm.m, rm.alpha, rm.l_before, rm.l, rm.p_sum, rm.s_max) == (
        s.m_before[t], s.m[t], s.alpha[t], s.l_before[t], s.l[t], s.p_sum[t], s.s_max[t])
    assert rm.rescaled and not rm.seen_nothing
    text = "\n".join(rm.latex())
    for x in (s.m_before[t], s.m[t], s.alpha[t], s.l_before[t], s.l[t], s.p_sum[t]):
        assert fmt(x) in text
    assert rf"{fmt(s.alpha[t])} \cdot {fmt(s.l_before[t])} + {fmt(s.p_sum[t])} = {fmt(s.l[t])}" \
        in text
    np.testing.assert_allclose(rm.alpha, np.exp(rm.m_before - rm.m), rtol=1e-5)


def test_live_math_shows_O_and_LSE_when_the_row_is_final():
    trace = _trace(Lq=64, Lk=64)
    r = 20
    last = trace.block_done_after[r // 16]
    rm = row_math(trace, last, r)
    assert rm.finished and rm.lse == trace.lse[r]
    text = "\n".join(rm.latex())
    assert rf"\mathrm{{LSE}}_{{{r}}}" in text and fmt(trace.lse[r]) in text
    assert fmt(np.linalg.norm(trace.out[r])) in text
    assert not row_math(trace, last - 1, r).finished


def test_live_math_for_a_row_that_has_seen_no_key_yet():
    # q_offset = -8: rows 0..7 sit before position 0 and see no key at all
    trace = _trace(Lq=32, Lk=64, Br=32, Bc=16, causal=True, q_offset=-8)
    rm = row_math(trace, 0, 0)  # row 0 at position -8 sees nothing
    assert rm.seen_nothing and rm.m == -math.inf
    assert any(r"no visible key yet" in line for line in rm.latex())
    with pytest.raises(ValueError, match="not in Q block"):
        row_math(trace, 0, 32)
