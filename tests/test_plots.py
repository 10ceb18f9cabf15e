"""The figure builders and the live math, read back: what they draw is what the trace holds.
The step view's figures are images: the tests read their pixels at data coordinates."""
import base64
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from attnviz import images, memory_images, plots, run_trace
from attnviz.livemath import fmt, row_math
from attnviz.masks import tile_status, visible_mask
from attnviz.raster import DIVERGING, VIRIDIS, blend, index_ticks, log_ticks, nice_ticks, rgb
from attnviz.scenarios import late_position, one_head
from attnviz.stats import memory_series, oracle, output_error


def _trace(name="random", Lq=64, Lk=64, D=8, Br=16, Bc=16, **mask):
    q, k, v = one_head(name, Lq, Lk, D, seed=0)
    return run_trace(q, k, v, q_block=Br, kv_block=Bc, **mask)


def _by_name(fig, name):
    return next(t for t in fig.data if t.name == name)


def _shape(fig, name):
    return next(s for s in fig.layout.shapes if s.name == name)


def _at(fig, plot, x, y):
    """The (r, g, b) the figure shows at data point (x, y) of one of its plots."""
    return tuple(int(c) for c in fig.array()[fig.plots[plot].pixel(x, y)])


@pytest.fixture(scope="module")
def causal():
    return _trace(Lq=80, Lk=112, Br=16, Bc=32)  # ragged, bottom-right causal


def test_png_is_the_canvas_pixel_for_pixel(causal):
    fig = images.tile_map(causal, 3)
    png = fig.png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")),
                                  fig.array())
    assert fig.data_url() == "data:image/png;base64," + base64.b64encode(png).decode()
    titled = Image.open(io.BytesIO(fig.titled_png("tile map, step 4", "a subtitle")))
    assert titled.width == fig.array().shape[1] and titled.height > fig.array().shape[0]
    long = fig.titled_png("t", "a subtitle far longer than the figure is wide " * 3)
    assert Image.open(io.BytesIO(long)).width > fig.array().shape[1]  # never cut off


def test_tile_map_colours_every_tile_by_its_class(causal):
    fig = images.tile_map(causal, 0)
    c = causal.config
    expected = tile_status(c.Lq, c.Lk, c.Br, c.Bc, causal=True, q_offset=c.mask.q_offset)
    s0 = causal.steps[0]
    for i in range(c.Tr):
        for j in range(c.Tc):
            color = rgb(images.STATUS_COLOR[expected[i, j]])
            if (i, j) == (s0.i, s0.j):  # visited at step 0
                color = blend(color, images.VISITED_SHADE, images.VISITED_ALPHA)
            assert _at(fig, "tiles", j, i) == color, (i, j)
    assert (expected == "skipped").sum() == causal.counts["skipped"] > 0


@pytest.mark.parametrize("n", [0, 3, 7])
def test_tile_map_outlines_step_n_and_shades_the_tiles_visited_so_far(causal, n):
    fig = images.tile_map(causal, n)
    s = causal.steps[n]
    assert fig.meta["current"] == [s.i, s.j]
    assert _at(fig, "tiles", s.j - 0.45, s.i) == rgb(images.CURRENT_COLOR)  # its left edge
    assert _at(fig, "tiles", s.j, s.i - 0.45) == rgb(images.CURRENT_COLOR)  # its top edge
    visited = {(t.i, t.j) for t in causal.steps[: n + 1]}
    for t in causal.steps:
        shade = blend(images.STATUS_COLOR[t.kind], images.VISITED_SHADE, images.VISITED_ALPHA)
        assert (_at(fig, "tiles", t.j, t.i) == shade) == ((t.i, t.j) in visited)
    y0, y1 = fig.plots["tiles"].pixel(0, 0)[0], fig.plots["tiles"].pixel(0, 1)[0]
    assert y0 < y1  # row 0 on top
    assert f"step {n + 1}" in fig.alt


def test_tile_map_grid_box_locates_every_tile(causal):
    fig = images.tile_map(causal, 0)
    c = causal.config
    h, w, _ = fig.array().shape
    x0, y0, x1, y1 = fig.meta["grid"]
    for i, j in [(0, 0), (c.Tr - 1, c.Tc - 1), (2, 1)]:  # tile centres from the fractions
        x = (x0 + (j + 0.5) / c.Tc * (x1 - x0)) * w
        y = (y0 + (i + 0.5) / c.Tr * (y1 - y0)) * h
        assert fig.plots["tiles"].pixel(j, i) == (int(y), int(x))


def test_step_tiles_grey_out_exactly_the_masked_scores(causal):
    c = causal.config
    n = next(s.n for s in causal.steps if s.kind == "partial")
    fig = images.step_tiles(causal, n)
    s = causal.steps[n]
    (i0, i1), (k0, k1) = c.rows(s.i), c.keys(s.j)
    vis = visible_mask(c.Lq, c.Lk, causal=True, q_offset=c.mask.q_offset)[i0:i1, k0:k1]
    assert (~vis).any() and vis.any()
    S, P = causal.tiles(n)
    span = fig.meta["span"]
    mask = rgb(images.MASK_COLOR)
    for r in range(i0, i1):  # absolute rows and keys on the axes
        for k in range(k0, k1):
            if not vis[r - i0, k - k0]:
                assert _at(fig, "S", k, r) == mask and _at(fig, "P~", k, r) == mask
                continue
            s_color = DIVERGING.colors(np.array([S[r - i0, k - k0]]), -span, span, mask)[0]
            p_color = VIRIDIS.colors(np.array([P[r - i0, k - k0]]), 0, 1, mask)[0]
            assert _at(fig, "S", k, r) == tuple(s_color) != mask
            assert _at(fig, "P~", k, r) == tuple(p_color)
    assert span == np.abs(S[vis]).max()
    assert f"rows {i0}–{i1 - 1} × keys {k0}–{k1 - 1}" in fig.alt


def test_one_row_tiles_are_tall_enough_with_few_colour_bar_ticks():
    """Decode's 1-row S and P~ tiles: a readable height (not a 56 px strip) and 3 colour bar
    ticks, still coloured by their values; a 16-row tile keeps 5 ticks."""
    q, k, v = one_head("random", 1, 193, 16, seed=0)
    trace = run_trace(q, k, v, q_block=1, kv_block=16, q_offset=192, window=64)
    n = 0
    fig = images.step_tiles(trace, n)
    s = trace.steps[n]
    (i0, _), (k0, k1) = trace.config.rows(s.i), trace.config.keys(s.j)
    for name in ("S", "P~"):
        top = fig.plots[name].xy(k0, i0 - 0.5)[1]
        bottom = fig.plots[name].xy(k0, i0 + 0.5)[1]
        assert abs(bottom - top) >= 80  # the one row's height in logical pixels
        assert len(fig.meta["bar_ticks"][name]) == 3
    span = fig.meta["span"]
    assert all(-span <= t <= span for t in fig.meta["bar_ticks"]["S"])
    S, P = trace.tiles(n)
    for key in range(k0, k1):
        if np.isfinite(S[0, key - k0]):
            want = DIVERGING.colors(np.array([S[0, key - k0]]), -span, span, (0, 0, 0))[0]
            assert _at(fig, "S", key, i0) == tuple(want)
    big = images.step_tiles(_trace("random", Lq=64, Lk=64, D=8), 0)
    assert [len(t) for t in big.meta["bar_ticks"].values()] == [len(nice_ticks(
        -big.meta["span"], big.meta["span"], 5)), 5]


def test_row_history_draws_m_and_l_and_marks_the_big_rescale():
    L = 128
    trace = _trace("late_spike", Lq=L, Lk=L, D=16)
    r = L - 1  # the last row sees the spike at 3/4 of the sequence
    n = trace.block_done_after[r // 16]
    fig = images.row_history(trace, n, r)
    steps = trace.row_history(r)
    t = r - trace.config.rows(steps[0].i)[0]
    assert fig.meta["j"] == [s.j for s in steps]
    np.testing.assert_allclose(fig.meta["m"], [s.m[t] for s in steps])
    np.testing.assert_allclose(fig.meta["l"], [s.l[t] for s in steps])
    expected = [s for s in steps if s.alpha[t] < 1 and np.isfinite(s.m_before[t])]
    assert [j for j, _, _ in fig.meta["rescale"]] == [s.j for s in expected]
    spike = [(j, a) for j, a, _ in fig.meta["rescale"] if j == late_position(L) // 16]
    assert len(spike) == 1 and spike[0][1] < np.exp(-5)
    for j, _, step in fig.meta["rescale"]:  # a red triangle on the m line at each rescale
        m = trace.steps[step].m[t]
        assert _at(fig, "m", j, m) == rgb(images.RESCALE_COLOR)
    first = steps[0]  # the m line's first point, not a rescale: blue
    assert _at(fig, "m", first.j, first.m[t]) == rgb(images.M_COLOR)
    assert _at(fig, "l", first.j, first.l[t]) == rgb(images.L_COLOR)
    # only the steps so far: halfway, fewer points
    half = images.row_history(trace, steps[2].n, r)
    assert len(half.meta["j"]) == 3
    both = images.row_history(trace, n, r, all_rows=True)
    assert both.meta["all_rows"] == 16 and fig.meta["all_rows"] == 0
    assert not np.array_equal(both.array(), fig.array())


def test_row_history_legend_under_a_bug_says_alpha_is_not_1():
    """no_max_carry on large logits lets m fall (alpha > 1): the legend must not say
    "alpha < 1" then; the correct loop's legend still does."""
    q, k, v = one_head("large_logits", 128, 128, 16, seed=0)
    bad = run_trace(q, k, v, q_block=16, kv_block=16, causal=False, bug="no_max_carry")
    good = run_trace(q, k, v, q_block=16, kv_block=16, causal=False)
    n = 3
    fig = images.row_history(bad, n, 0)
    assert [a > 1 for _, a, _ in fig.meta["rescale"]].count(True) >= 1  # m fell here
    assert "rescale (alpha ≠ 1)" in fig.meta["legend"]
    assert "rescale (alpha < 1)" not in fig.meta["legend"]
    ok = images.row_history(good, n, 0)
    assert all(a < 1 for _, a, _ in ok.meta["rescale"])
    assert "rescale (alpha < 1)" in ok.meta["legend"]


def test_output_rows_show_only_finished_rows_and_their_error():
    trace = _trace(Lq=64, Lk=64, D=8)
    O_ref, lse_ref = oracle(trace)
    n = trace.block_done_after[1]  # blocks 0 and 1 finished
    done, err_o, _ = output_error(trace, O_ref, lse_ref, n)
    assert done.sum() == 32 and done[:32].all()
    fig = images.output_rows(trace, n, done, err_o)
    pending = rgb(images.PENDING_COLOR)
    for row in (0, 17, 31, 32, 50, 63):
        for d in (0, 7):
            assert (_at(fig, "O", d, row) == pending) == (row >= 32), (row, d)
    for row in (13, 27, 31):  # a purple dot at each finished row's error
        assert _at(fig, "error", row, max(err_o[row], 1e-12)) == rgb(images.ERR_COLOR)
    assert max(err_o[:32]) < 1e-5
    assert fig.meta["rows_done"] == 32 and "32 of 64" in fig.alt


def test_memory_chart_marks_ram_and_current_length_and_plots_the_model():
    from attnviz import memory

    Ls = [128, 1024, 8192, 131072]
    series = memory_series(lambda L: memory.Shape(1, 8, 2, L, L, 64), Ls, 64, 64, 2)
    fig = memory_images.memory_chart(Ls, series, ram=2**34, current_L=1024,
                                     measured={"standard": (1024, 12345)})
    p = fig.plots["bytes"]
    assert p.x.log and p.y.log
    a = fig.array()
    row, c0 = p.pixel(Ls[0], 2**34)
    _, c1 = p.pixel(Ls[-1], 2**34)
    ram_line = (a[row, c0:c1] == rgb(images.CURRENT_COLOR)).all(axis=1)  # dashed, across
    assert ram_line.mean() > 0.4
    r0, col = p.pixel(1024, 2**10)
    r1, _ = p.pixel(1024, 2**40)
    l_line = (a[r1:r0, col] == (100, 116, 139)).all(axis=1)  # dotted, #64748b, at L = 1024
    assert l_line.mean() > 0.2
    std = [4 * 8 * L * L for L in Ls]
    assert list(series["standard (S/P matrix)"]) == std
    color = rgb(images.COLORWAY[fig.meta["series"].index("standard (S/P matrix)")])
    for L, b in zip(Ls[1:], std[1:], strict=True):  # a dot at each modelled point (at 128,
        # the GQA copy lies on top)
        assert _at(fig, "bytes", L, b) == color
    assert _at(fig, "bytes", 1024, 12345) == (17, 24, 39)  # the measured cross (#111827)
    assert "measured: standard at L = 1024" in fig.alt


def test_memory_chart_names_a_zero_peak_instead_of_plotting_it_at_the_axis_floor():
    from attnviz import memory

    Ls = [128, 1024, 8192]
    series = memory_series(lambda L: memory.Shape(1, 8, 8, L, L, 64), Ls, 64, 64, 2)
    plain = memory_images.memory_chart(Ls, series, ram=2**34, current_L=128)
    fig = memory_images.memory_chart(Ls, series, ram=2**34, current_L=128,
                                     measured={"standard": (128, 0), "streaming": (128, 5000)})
    assert fig.plots["bytes"].y.lo == plain.plots["bytes"].y.lo  # the axis is not stretched
    assert _at(fig, "bytes", 128, 5000) == (17, 24, 39)  # the positive one is a cross
    assert "measured: standard at L = 128, < 64 KiB (below what RSS resolves)" in fig.alt
    assert "measured: streaming at L = 128, < 64 KiB" in fig.alt  # never "0 B" or "4.88 KiB"


def test_ticks():
    assert nice_ticks(0, 1, 6) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(-2.7, 2.7, 5) == [-2, 0, 2]
    assert index_ticks(1024, 64, 5) == [1040, 1060, 1080]
    assert index_ticks(96, 16) == [96, 98, 100, 102, 104, 106, 108, 110]  # absolute rows
    assert index_ticks(0, 8) == list(range(8))
    assert log_ticks(3e-8, 2e-7) == [1e-8, 1e-7, 1e-6]


def test_crossover_is_where_streaming_stays_faster():
    rows = [{"L": 256, "standard_s": 1.0, "streaming_s": 2.0},
            {"L": 512, "standard_s": 2.0, "streaming_s": 1.5},
            {"L": 1024, "standard_s": 5.0, "streaming_s": 3.0},
            {"L": 2048, "standard_s": None, "streaming_s": 9.0,
             "standard_skipped": "memory guard"}]
    assert plots.crossover(rows) == 512
    fig = plots.crossover_chart(rows)
    assert list(_by_name(fig, "crossover 256–512: streaming faster from L = 512").x) == [512, 512]
    assert list(_by_name(fig, "standard not run: its memory guard (S too big)").x) == [2048]
    assert plots.crossover(rows[:1]) is None


def test_no_crossover_is_claimed_at_the_sweeps_first_point():
    # streaming already faster at the first L: no crossover was measured, none is drawn
    rows = [{"L": 256, "standard_s": 3.0, "streaming_s": 2.0},
            {"L": 512, "standard_s": 9.0, "streaming_s": 4.0}]
    assert plots.crossover(rows) is None and plots.streaming_always(rows)
    fig = plots.crossover_chart(rows)
    assert not any(t.name.startswith("crossover") for t in fig.data)
    entry = _by_name(fig, "streaming faster at every L measured (from 256)")
    assert list(entry.x) == [None]  # a legend entry, no line
    # standard wins at the end: streaming is not "faster from" anywhere
    back = [*rows, {"L": 1024, "standard_s": 10.0, "streaming_s": 11.0}]
    assert plots.crossover(back) is None and plots.crossover_label(back) is None
    # standard wins throughout
    assert plots.crossover_label([{"L": 256, "standard_s": 1.0, "streaming_s": 2.0}]) is None


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
    assert rf"{{\mathrm{{LSE}}}}_{{{r}}}" in text and fmt(trace.lse[r]) in text
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


def test_block_sweep_marks_the_kernel_default_and_the_sidebar_tile():
    g = np.array([[1.0, 2.0], [3.0, 5.0]])
    marks = {"kernel default": (32, 64), "sidebar (stepper)": (16, 128)}
    fig = plots.block_sweep_chart([16, 32], [64, 128], g, marks=marks)
    for name, (x, y) in (("kernel default", (0, 1)), ("sidebar (stepper)", (1, 0))):
        s = _shape(fig, name)
        assert ((s.x0 + s.x1) / 2, (s.y0 + s.y1) / 2) == (x, y) and s.showlegend
    assert fig.data[0].text[1][0] == "3.0<br>kernel" and fig.data[0].text[0][1] == "2.0<br>sidebar"
    off = plots.block_sweep_chart([16, 32], [64, 128], g, marks={"kernel default": (64, 64)})
    assert [s.name for s in off.layout.shapes] == ["best"]  # a tile off the grid: no mark


def test_roofline_labels_on_one_line_never_print_over_each_other():
    """Standard's points share one intensity: labels go left or right of their points, and
    a label with no free side joins the one just below."""
    gap = 0.05
    ys = [10.0, 30.0, 10.4, 31.0, 10.2]  # L = 256 .. 4K: three close, two close
    text, where = plots._side_labels(ys, ["256", "512", "1K", "2K", "4K"], gap)
    placed = [(math.log10(y), w) for y, t, w in zip(ys, text, where, strict=True) if t]
    for side in ("middle left", "middle right"):
        logs = sorted(y for y, w in placed if w == side)
        assert all(b - a >= gap for a, b in zip(logs, logs[1:], strict=False)), (side, logs)
    assert text == ["256", "512", "", "2K", "4K, 1K"]  # every L named once
    assert where[:2] == ["middle left"] * 2 and where[3:] == ["middle right"] * 2


def test_roofline_labels_along_a_line_never_print_over_each_other():
    """Streaming's points climb the roof: a label goes above-left of its point, else
    below-right (off the line), above, below, right or left, wherever it touches no label
    already placed (a learner saw "2K" over "4K", then "512 2K" run together); with no spot
    free it joins the label of the point before."""
    xgap, ygap = 0.1, 0.05
    spots = plots.LABEL_SPOTS
    xs = [10.0, 20.0, 22.0, 23.0, 60.0]  # L = 256 .. 4K: the middle three crowd
    ys = [40.0, 80.0, 82.0, 83.0, 120.0]
    text, where = plots._spread_labels(xs, ys, ["256", "512", "1K", "2K", "4K"], xgap, ygap)
    assert text == ["256", "512", "1K", "2K", "4K"]
    assert where == ["top left", "top left", "bottom right", "top center", "top left"]
    assert spots[:2] == ("top left", "bottom right")  # off the rising line's two sides first
    # the box geometry itself: above sits over the marker, right sits beside it
    top = plots.label_box(10.0, 10.0, "top center", "1K", xgap, ygap)
    assert top[2] > 1.0 and top[0] < 1.0 < top[1]
    right = plots.label_box(10.0, 10.0, "middle right", "1K", xgap, ygap)
    assert right[0] > 1.0 and right[2] < 1.0 < right[3]
    rng = np.random.default_rng(3)
    labels = ["64", "128", "256", "512", "1K", "2K", "4K"]
    joined = 0
    for _ in range(300):  # random climbs: every L named once, no two labels overlap
        xs = [10 ** x for x in np.cumsum(rng.uniform(0.0, 0.15, 7)) + 1.0]
        ys = [10 ** y for y in np.cumsum(rng.uniform(-0.03, 0.06, 7)) + 1.0]
        text, where = plots._spread_labels(xs, ys, labels, xgap, ygap)
        assert sorted(", ".join(t for t in text if t).split(", "), key=labels.index) == labels
        boxes = [plots.label_box(x, y, w, t, xgap, ygap)
                 for x, y, t, w in zip(xs, ys, text, where, strict=True) if t]
        single = [b for b, t in zip(boxes, [t for t in text if t], strict=True) if "," not in t]
        assert not any(plots.boxes_overlap(a, b) for i, a in enumerate(single)
                       for b in single[i + 1:])
        joined += sum("," in t for t in text)
    assert joined < 60  # of 2100 labels: six spots leave few joins
    far = plots._spread_labels([1.0, 10.0, 100.0], [1.0, 10.0, 100.0], ["a", "b", "c"], xgap, ygap)
    assert far == (["a", "b", "c"], ["top left"] * 3)
