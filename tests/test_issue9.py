"""Issue 9's visual, wording and control defects, each checked where a test can see it: the
figures by their pixels, the page through AppTest (the browser-only ones are in
``tests/browser/test_issue9.py``)."""
import json
import math

import numba
import numpy as np
import pytest

from attnviz import images, memory, memory_images, plots, run_trace
from attnviz.export import trace_json
from attnviz.presets import PRESETS
from attnviz.raster import WHITE, Canvas, legend, log_ticks, rgb
from attnviz.scenarios import one_head
from attnviz.stats import oracle, output_error
from attnviz.ui.memory import working_set_caption
from attnviz.ui.tilemap import skipped_reason
from attnviz.viewconfig import ViewConfig, typed_view
from tests.test_app import (
    click_tile,
    config,
    keyed,
    ok,
    open_app,
    open_tab,
    shown,
    slide_to,
    step,
    table,
    tilemap,
    trace_of,
    trigger,
)


def _trace(cfg: ViewConfig):
    q, k, v = one_head(cfg.scenario, cfg.Lq, cfg.Lk, cfg.D, seed=cfg.seed)
    return run_trace(q, k, v, q_block=cfg.Br, kv_block=cfg.Bc, **cfg.mask_kwargs())


DECODE = PRESETS["decode with a KV cache"].config
CHUNKED_TOP_LEFT = ViewConfig(mode="chunked", chunk=128, cache=384, D=64, Br=32, Bc=64,
                              align="top-left")
SLIVER = ViewConfig(L=128, Br=1, Bc=256)


# --- the tile map ----------------------------------------------------------------------------

def _grid_px(fig) -> tuple[int, int, int, int]:
    """The grid's box in device pixels (x0, y0, x1, y1)."""
    h, w, _ = fig.array().shape
    x0, y0, x1, y1 = fig.meta["grid"]
    return round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)


@pytest.mark.parametrize("cfg", [DECODE, CHUNKED_TOP_LEFT, SLIVER, PRESETS["first look"].config],
                         ids=["decode", "chunked top-left", "1x128 sliver", "first look"])
def test_the_y_title_never_reaches_the_legend(cfg):
    """The rows just below the legend stay blank left of the grid: a y-axis title longer
    than a short grid used to run up through them into the legend. (A first tick label
    may stand a few pixels above the grid: the band checked is the gap's top 3 px.)"""
    trace = _trace(cfg)
    fig = images.tile_map(trace, 0)
    a = fig.array()
    s = fig.canvas.scale
    legend_h = legend(Canvas(fig.width, 1), 6, 4, images.tile_map_legend(), fig.width - 12,
                      draw=False)
    x0, y0, _, _ = _grid_px(fig)
    below = int((4 + legend_h) * s) + 1
    assert y0 - below > 3 * s
    gap = a[below: below + 3 * s, : x0 - 1]
    assert gap.size and (gap == WHITE).all()


@pytest.mark.parametrize("cfg", [SLIVER, DECODE, ViewConfig(L=128, Br=256, Bc=1)],
                         ids=["128 x 1", "decode 1 x 16", "1 x 128"])
def test_the_grid_keeps_a_visible_clickable_size(cfg):
    """``?L=128&Br=1&Bc=256`` drew a 3-px sliver: the grid is now at least
    MIN_GRID_W x MIN_GRID_H, and its box still locates every tile's centre."""
    trace = _trace(cfg)
    fig = images.tile_map(trace, 0)
    x0, y0, x1, y1 = _grid_px(fig)
    s = fig.canvas.scale
    assert (x1 - x0) / s >= images.MIN_GRID_W - 1 and (y1 - y0) / s >= images.MIN_GRID_H - 1
    c = trace.config
    h, w, _ = fig.array().shape
    gx0, gy0, gx1, gy1 = fig.meta["grid"]
    for i, j in [(0, 0), (c.Tr - 1, c.Tc - 1), (c.Tr // 2, c.Tc // 2)]:
        x = (gx0 + (j + 0.5) / c.Tc * (gx1 - gx0)) * w
        y = (gy0 + (i + 0.5) / c.Tr * (gy1 - gy0)) * h
        assert fig.plots["tiles"].pixel(j, i) == (int(y), int(x))


def test_every_tile_colour_is_in_the_legend():
    """Visited partial tiles were drawn brown, a colour the legend lacked."""
    trace = _trace(CHUNKED_TOP_LEFT)
    entries = {color for _, _, color in images.tile_map_legend()}
    for n in (0, len(trace.steps) - 1):
        colors = images.tile_status_colors(trace, n).reshape(-1, 3)
        used = {tuple(int(x) for x in c) for c in colors}
        assert used <= entries, used - entries
    last = images.tile_status_colors(trace, len(trace.steps) - 1)
    partial = trace.tile_status == "partial"
    assert partial.any() and {tuple(c) for c in last[partial]} == {
        images.tile_colors("partial", True)}
    # the legend's swatches are drawn in those colours: each one appears in the image
    fig = images.tile_map(trace, len(trace.steps) - 1)
    legend_px = {tuple(int(x) for x in p) for p in fig.array()[: _grid_px(fig)[1]].reshape(-1, 3)}
    for _, _, color in images.tile_map_legend():
        assert tuple(color) in legend_px, color


def test_a_skipped_tile_says_why_in_numbers():
    causal = _trace(PRESETS["first look"].config)  # 128 x 128 in 16 x 16 tiles
    text = skipped_reason(causal, 0, 5)
    assert "Tile (0, 5) is skipped" in text
    assert "Every key in it lies in the future of every row of Q block 0" in text
    assert "keys 80–95" in text and "keys up to 15 only" in text
    top_left = _trace(CHUNKED_TOP_LEFT)  # row r at position r: the cache is mostly hidden
    i, j = 0, 3
    assert top_left.tile_status[i, j] == "skipped"
    text = skipped_reason(top_left, i, j)
    assert "positions 0–31" in text and "future" in text
    window = _trace(ViewConfig(L=256, D=16, Br=32, Bc=32, mask="window", W=40))
    assert window.tile_status[7, 0] == "skipped"
    text = skipped_reason(window, 7, 0)
    assert "older than the window" in text and "keys from 185 on" in text  # 224 - 40 + 1
    assert "window of 40 keys" in text


def test_clicking_a_skipped_tile_explains_it_on_the_page():
    at = open_app()
    click_tile(at, 0, 5)
    assert step(at) == 0
    info = [x.value for x in at.info]
    assert any("Every key in it lies in the future of every row of Q block 0" in x
               for x in info), info
    click_tile(at, 2, 1)  # a computed tile: no message any more
    assert not at.info


# --- the per-row error chart -----------------------------------------------------------------

def test_error_axis_covers_every_error_and_puts_exact_rows_on_a_labelled_floor():
    """A fixed 1e-12..1e-6 axis clipped 4.5e-6 over the title and left zeros unexplained."""
    trace = _trace(ViewConfig(L=64, D=8, Br=16, Bc=16))
    n = len(trace.steps) - 1
    done = np.ones(64, bool)
    err = np.full(64, 3e-8)
    err[[3, 40]] = 4.5e-6
    err[[7, 8, 50]] = 0.0
    err[20] = 2e-13
    fig = images.output_rows(trace, n, done, err)
    p = fig.plots["error"]
    assert p.y.lo < 2e-13 and p.y.hi > 4.5e-6
    floor = fig.meta["exact_floor"]
    assert floor is not None and floor < 2e-13
    x0, y0, x1, y1 = (v * fig.canvas.scale for v in p.box)
    for r in (3, 40, 20, 0):
        row, col = p.pixel(r, err[r])
        assert y0 < row < y1 and x0 < col < x1
        assert tuple(fig.array()[row, col]) == rgb(images.ERR_COLOR), r
    for r in (7, 8, 50):
        row, _ = p.pixel(r, floor)
        assert tuple(fig.array()[p.pixel(r, floor)]) == rgb(images.EXACT_COLOR)
        assert y0 < row < y1
    # no exact row: no floor
    assert images.output_rows(trace, n, done, np.full(64, 1e-7)).meta["exact_floor"] is None


def test_large_logits_errors_stay_inside_the_chart():
    cfg = ViewConfig(L=256, D=32, Br=32, Bc=32, scenario="large_logits")
    trace = _trace(cfg)
    O_ref, lse_ref = oracle(trace)
    n = len(trace.steps) - 1
    done, err_o, _ = output_error(trace, O_ref, lse_ref, n)
    fig = images.output_rows(trace, n, done, err_o)
    p = fig.plots["error"]
    assert p.y.hi > err_o.max() > 1e-6  # the case of the issue: above 1e-6
    top = p.box[1] * fig.canvas.scale
    worst = int(np.argmax(err_o))
    row, col = p.pixel(worst, err_o[worst])
    assert row > top and tuple(fig.array()[row, col]) == rgb(images.ERR_COLOR)


@pytest.mark.parametrize("lo,hi", [(1e-12, 4.5e-6), (3e-8, 2e-7), (2.3e-19, 8.4e-6),
                                   (1e-7, 1e-7), (5e-3, 5e-3), (1.0, 1e30)])
def test_log_ticks_cover_the_range(lo, hi):
    ticks = log_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 7
    ratios = {round(math.log10(b / a), 6) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(ratios) == 1  # evenly spaced decades


# --- the memory chart and tab ----------------------------------------------------------------

def test_bytes_labels_never_use_an_exponent():
    assert plots.bytes_label(2**50) == "1 PiB" and plots.bytes_label(2**60) == "1 EiB"
    assert plots.bytes_label(3 * 2**40) == "3 TiB"
    assert all("e" not in plots.bytes_label(2**k).split()[0] for k in range(0, 70))


def test_memory_chart_ticks_are_not_cut_off_for_the_seed_preset():
    from attnviz.stats import memory_series
    from attnviz.ui.memory import CHART_LS, shape_at

    cfg = PRESETS["seed's 32x64 blocks"].config
    series = memory_series(lambda L: shape_at(cfg, L), CHART_LS, cfg.Br, cfg.Bc, 2)
    fig = memory_images.memory_chart(CHART_LS, series, ram=2**34, current_L=cfg.Lk)
    assert max(max(ys) for ys in series.values()) > 2**40  # the axis reaches PiB
    a = fig.array()
    assert (a[:, :4] == WHITE).all()  # nothing drawn at the left edge: no label cut off
    assert "1 PiB" in [plots.bytes_label(2**k) for k in range(0, 61, 10)]


def test_working_set_terms_are_what_the_kernel_allocates():
    """The caption's terms, against the arrays ``prefill_kernel`` allocates per task."""
    Br, Bc, D = 32, 64, 64
    m, l, alpha = (np.empty(Br, np.float32) for _ in range(3))
    acc = np.empty((Br, D), np.float32)
    S = np.empty(2 * Br * Bc, np.float32)  # S and P~ tiles
    qpos = np.arange(0, Br, dtype=np.int64)
    allocated = m.nbytes + l.nbytes + alpha.nbytes + acc.nbytes + S.nbytes + qpos.nbytes
    terms = memory.working_set_terms(Br, Bc, D)
    assert sum(b for _, _, b in terms) == memory.tile_working_set(Br, Bc, D) == allocated


def test_memory_tab_caption_rebuilds_the_table_number():
    at = open_app()
    at.selectbox(key="preset").set_value("seed's 32x64 blocks").run()
    cfg = config(ok(at))
    mem = table(at, "what").set_index("what")["bytes"]
    threads = next(int(c.value.split("× ")[-1].split(" busy thread")[0])
                   for c in at.caption if c.value.startswith("Streaming working set"))
    caption = working_set_caption(cfg, threads)
    assert any(c.value == caption for c in at.caption)
    per_task = memory.tile_working_set(cfg.Br, cfg.Bc, cfg.D)
    assert f"({per_task} B)" in caption and f"({threads * per_task} B)" in caption
    assert mem["streaming working set (all busy threads)"] == plots.bytes_label(
        threads * per_task)
    for name, shape, b in memory.working_set_terms(cfg.Br, cfg.Bc, cfg.D):
        assert f"{name} {shape} ({plots.bytes_label(b)})" in caption


# --- wording ---------------------------------------------------------------------------------

def _heading(at) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("#### Step "))


def test_steps_count_from_one_so_the_last_reads_as_the_last():
    at = open_app()
    assert _heading(at).startswith("#### Step 1 of 36:")
    at.button(key="last").click().run()
    assert _heading(ok(at)).startswith("#### Step 36 of 36:")
    assert at.query_params["step"] == "35"  # the URL stays 0-based
    assert shown(at, "step_tiles")[1].startswith("S and P~ tiles, step 36:")
    slider = json.loads(keyed(at._tree, "step_slider").proto.json)
    assert slider["value"] == 35 and slider["last"] == 35  # the page shows value + 1
    # decode with a window: one tile, "Step 1 of 1", not "Step 0 of 0"
    at.radio(key="mode").set_value("decode").run()
    at.radio(key="mask").set_value("window").run()
    at.number_input(key="W").set_value(1).run()
    assert _heading(ok(at)).startswith("#### Step 1 of 1:")


def test_one_query_row_is_singular_and_the_decode_preset_says_what_the_field_shows():
    at = open_app()
    at.selectbox(key="preset").set_value("decode with a KV cache").run()
    cfg = config(ok(at))
    assert at.number_input(key="cache").value == cfg.cache == 1023 and cfg.Lk == 1024
    about = PRESETS["decode with a KV cache"].about
    assert "1023 cached" in about and f"{cfg.Lk} keys" in about and f"{cfg.Tc} KV tiles" in about
    lines = [c.value for c in at.sidebar.caption]
    assert any(x.startswith("Lq = 1 query row, Lk = 1024 keys;") for x in lines), lines


@pytest.mark.parametrize("change", [("L", 256), ("mode", "decode"), ("mask", "none")])
def test_the_loaded_caption_goes_once_the_configuration_changes(change):
    at = open_app()
    at.selectbox(key="preset").set_value("first look").run()
    assert any("Loaded **first look**" in c.value for c in ok(at).sidebar.caption)
    key, value = change
    widget = at.number_input(key=key) if key == "L" else at.radio(key=key)
    widget.set_value(value).run()
    assert not any("Loaded" in c.value for c in ok(at).sidebar.caption)


def test_the_diagonal_caption_follows_the_alignment():
    at = open_app()
    at.selectbox(key="preset").set_value("chunked prefill").run()
    lines = [c.value for c in ok(at).sidebar.caption]
    assert any("diagonal sits **bottom-right**" in x for x in lines)
    assert any("the diagonal sits bottom-right" in x for x in lines)  # the preset's sentence
    at.radio(key="align").set_value("top-left").run()
    lines = [c.value for c in ok(at).sidebar.caption]
    assert any("diagonal sits **top-left**" in x for x in lines)
    assert not any("bottom-right" in x for x in lines), lines


def test_json_export_meta_view_is_typed():
    cfg = PRESETS["chunked prefill"].config
    view = json.loads(trace_json(_trace(cfg), {"view": typed_view(cfg)}))["meta"]["view"]
    assert view["chunk"] == 128 and view["cache"] == 384 and view["Br"] == 32
    assert view["mode"] == "chunked" and "L" not in view
    assert all(type(v) is int for k, v in view.items()
               if k not in ("mode", "mask", "align", "scenario"))


# --- controls --------------------------------------------------------------------------------

def test_an_out_of_range_typed_value_is_clamped_with_the_url_notice():
    at = open_app()
    assert at.number_input(key="L").max is None  # the field itself refuses nothing
    at.number_input(key="L").set_value(99999999).run()
    assert at.session_state["L"] == 4096 and at.number_input(key="L").value == 4096
    assert any("L=99999999 is outside [1, 4096]; using 4096." in w.value
               for w in ok(at).warning)
    at.number_input(key="Hq").set_value(0).run()
    assert any("Hq=0 is outside [1, 64]; using 1." in w.value for w in ok(at).warning)


def test_slider_sends_are_acknowledged_with_their_sequence_number():
    at = open_app()
    trigger(at, "step_slider", "step", [5, 1700000000001])
    assert step(at) == 5
    data = json.loads(keyed(at._tree, "step_slider").proto.json)
    assert data["value"] == 5 and data["seq"] == 1700000000001
    slide_to(at, 9)  # a bare step (older pages) still moves it
    assert step(at) == 9
    trigger(at, "step_slider", "step", ["x", 3])  # garbage: ignored
    assert step(at) == 9


def _tick(at, shown: int):
    return trigger(at, "step_slider", "tick", shown)


def test_auto_play_ticks_count_from_the_step_the_page_shows():
    """The race of issue 9: ticks that the server handled late or twice, or after a pause,
    ran the cursor ahead of the page, so Next after Pause jumped (31 -> 516). A tick now
    says which step the page shows; only a tick from the current step advances."""
    at = open_app()
    at.selectbox(key="preset").set_value("long prefill").run()
    slide_to(ok(at), 31)
    at.button(key="play").click().run()
    assert at.session_state["playing"]
    _tick(at, 31)
    assert step(at) == 32
    _tick(at, 31)  # the same tick again (late, repeated): no second step
    _tick(at, 31)
    assert step(at) == 32
    _tick(at, 32)
    assert step(at) == 33
    at.button(key="play").click().run()  # pause
    assert not at.session_state["playing"]
    _tick(at, 33)  # a tick sent before the pause arrived: ignored
    assert step(at) == 33
    at.button(key="next").click().run()
    assert step(ok(at)) == 34 and trace_of(at).steps[34] is not None
    assert tilemap(at)["current"] == [trace_of(at).steps[34].i, trace_of(at).steps[34].j]


def test_play_and_pause_set_the_state_so_a_repeated_click_cannot_flip_it_back():
    at = open_app()
    at.button(key="play").click().run()
    assert at.session_state["playing"]
    # the button is now drawn as Pause: its callback sets playing = False, however often
    play = keyed(at._tree, "play")
    assert play.proto.label == "Pause"
    at.button(key="play").click().run()
    assert not at.session_state["playing"]
    at.button(key="next").click().run()
    at.button(key="next").click().run()
    assert step(ok(at)) == 2  # Next moves from the step it was drawn at, one at a time


def test_a_single_step_configuration_stops_playing():
    at = open_app()
    at.button(key="play").click().run()
    at.radio(key="mode").set_value("decode").run()
    at.radio(key="mask").set_value("window").run()
    at.number_input(key="W").set_value(1).run()  # one tile: no slider, no ticks
    assert not at.session_state["playing"] and at.button(key="play").label == "Play"


def test_memory_tab_models_decode_with_the_decode_paths_own_buffers():
    """Decode (one query row) stacks the g query heads of a KV head as the rows of its tiles,
    and keeps each chunk's partial state: the Memory tab counts those, not prefill's Br-row
    tiles (which once put streaming above standard for one query: 36.7 vs 36 KiB)."""
    from attnviz.timed_call import problem

    at = open_tab(open_app(mode="decode", cache=1023, D=64, Hq=8, Hkv=2, Bc=64), "Memory")
    cfg = config(at)
    mem = table(at, "what").set_index("what")["bytes"]
    s = memory.Shape(1, 8, 2, 1, 1024, 64)
    chunks = problem(cfg, blocks="stepper").chunks
    assert mem["decode partial states (m, l, acc per chunk)"] == plots.bytes_label(
        memory.decode_partials_bytes(s, chunks))
    threads = next(int(c.value.split("× ")[-1].split(" busy thread")[0])
                   for c in at.caption if c.value.startswith("Streaming working set"))
    assert mem["streaming total (+ output)"] == plots.bytes_label(
        memory.streaming_bytes(s, 16, 64, threads, chunks))
    assert memory.streaming_bytes(s, 16, 64, threads, chunks) < memory.standard_bytes(s)
    caption = next(c.value for c in at.caption if c.value.startswith("Streaming working set"))
    assert caption.startswith("Streaming working set, per task (one chunk of one KV head: its "
                              "4 query head(s) are the rows, Br does not apply): Q group "
                              "4×64 float32")
    assert any("Bc=64 (decode: the 4 query head(s) of a KV head are the rows" in m.value
               for m in at.markdown)
    # and the total with the kernel's own decode tiles, the timing panel's default
    kernel = problem(cfg)
    said = [c.value for c in at.caption if c.value.startswith("With the kernel's own")]
    if kernel.blocks[1] == 64:
        assert not said
    else:
        total = memory.streaming_bytes(s, 16, kernel.blocks[1], threads, kernel.chunks)
        assert said == [f"With the kernel's own decode tiles of {kernel.blocks[1]} keys in "
                        f"{kernel.chunks} chunk(s) per KV head (the ones the Timing tab's "
                        "calls use) instead of the sidebar's, streaming's total on "
                        f"{numba.get_num_threads()} threads is **{plots.bytes_label(total)}**. "
                        "The Timing tab's model column counts the threads it times with (one "
                        "task's working set per busy thread)."]
