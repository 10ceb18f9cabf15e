"""The Streamlit app through AppTest: every control, stepping, play/pause, tile clicks, presets,
the URL round trip and bad URL values, the timing panel. Assertions read what the page shows
(the tile map's data and pixels: outlined tile, tile classes; every figure's image pixel for
pixel against the figure drawn here from a trace computed independently of the app; the
numbers in tables and formulas)."""
import base64
import io
import json
import math
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np
import pytest
from PIL import Image
from streamlit.components.v2.bidi_component.main import _make_trigger_id
from streamlit.testing.v1 import AppTest

from attnviz import images, plots, run_trace
from attnviz.livemath import fmt, row_math
from attnviz.masks import tile_status
from attnviz.presets import PRESETS
from attnviz.scenarios import one_head
from attnviz.ui import mathpanel
from attnviz.viewconfig import DEFAULT, FIELDS, ViewConfig, clamp
from kernels import tile_products
from kernels.tuning import products

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def open_app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({k: str(v) for k, v in params.items()})
    return ok(at.run())


def ok(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def config(at: AppTest) -> ViewConfig:
    return ViewConfig(**{k: at.session_state[k] for k in FIELDS})


@lru_cache(maxsize=None)
def _trace(cfg: ViewConfig, loops: tuple[bool, bool]):  # loops: in the key, as in the app's
    q, k, v = one_head(cfg.scenario, cfg.Lq, cfg.Lk, cfg.D, seed=cfg.seed)
    return run_trace(q, k, v, q_block=cfg.Br, kv_block=cfg.Bc, **cfg.mask_kwargs())


def trace_of(at: AppTest):
    """The trace the app should be showing, recomputed here."""
    cfg = config(at)
    return _trace(cfg, tile_products(cfg.Lq, cfg.D))


def chart(at: AppTest, key: str) -> dict:
    el = next(e for e in at.get("plotly_chart") if e.key == key)
    return json.loads(el.proto.spec)


def keyed(node, key: str):
    """The element or block with ``key`` anywhere in the page, or None."""
    if getattr(node, "key", None) == key:
        return node
    for child in getattr(node, "children", {}).values():
        found = keyed(child, key)
        if found is not None:
            return found
    return None


def _png(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
                      .convert("RGB"))


def shown(at: AppTest, key: str) -> tuple[np.ndarray, str]:
    """(pixels, alt text) of the image in the container keyed ``key``."""
    block = keyed(at._tree, key)
    img = next(iter(block.children.values())).proto.imgs[0]
    return _png(img.url), img.alt


def assert_shows(at: AppTest, key: str, fig: images.Figure) -> None:
    """The page's image under ``key`` is ``fig``, pixel for pixel."""
    pixels, _ = shown(at, key)
    np.testing.assert_array_equal(pixels, fig.array())


def tilemap(at: AppTest) -> dict:
    """The data the tile map component was given (PNG, grid box, tile classes and steps)."""
    return json.loads(keyed(at._tree, "tilemap").proto.json)


def live_math(at: AppTest) -> dict:
    """The live math box's data: the formulas as MathML and LaTeX, and its notes."""
    return json.loads(keyed(at._tree, "live_math").proto.json)


def table(at: AppTest, first_column: str):
    """The st.table whose first column is ``first_column``, as a pandas DataFrame."""
    return next(t.value for t in at.table if t.value.columns[0] == first_column)


def rows_table(at: AppTest) -> dict[str, np.ndarray]:
    """The rows table as shown (the rows_table component's text), by column: numbers as
    floats, ``rescaled`` as bools."""
    data = json.loads(keyed(at._tree, "rows_table").proto.json)
    cols = list(zip(*data["rows"], strict=True))
    return {name: (np.array([v == "yes" for v in col]) if name == "rescaled"
                   else np.array([float(v) for v in col]))
            for name, col in zip(data["columns"], cols, strict=True)}


def values(v) -> np.ndarray:
    """A trace's data array from the chart spec: plotly sends NumPy arrays as base64."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return a.reshape([int(x) for x in v["shape"].split(",")]) if "shape" in v else a
    return np.array(v, dtype=float)


def named(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t.get("name") == name)


def outlined_tile(at: AppTest) -> tuple[int, int]:
    """The tile the map says it outlines, checked on its pixels: the outline's colour just
    inside that tile's left edge."""
    data = tilemap(at)
    i, j = data["current"]
    pixels = _png(data["src"])
    h, w, _ = pixels.shape
    x0, y0, x1, y1 = data["grid"]
    x = (x0 + (j + 0.04) / data["Tc"] * (x1 - x0)) * w
    y = (y0 + (i + 0.5) / data["Tr"] * (y1 - y0)) * h
    assert tuple(pixels[int(y), int(x)]) == (220, 38, 38), "no outline at the current tile"
    return i, j


def grid(at: AppTest) -> np.ndarray:
    """Tile class codes (images.STATUS_CODE) of the tile map, [Tr, Tc]."""
    data = tilemap(at)
    return np.array(data["status"]).reshape(data["Tr"], data["Tc"])


def step(at: AppTest) -> int:
    return at.session_state["step"]


def assert_shows_step(at: AppTest, n: int) -> None:
    trace = trace_of(at)
    s = trace.steps[n]
    assert step(at) == n
    assert outlined_tile(at) == (s.i, s.j)
    assert any(m.value.startswith(f"#### Step {n + 1} of {len(trace.steps)}: Q block {s.i} ")
               for m in at.markdown)
    assert at.query_params["step"] == str(n)


def trigger(at: AppTest, key: str, event: str, value) -> AppTest:
    """What a custom component's script sends with ``setTriggerValue(event, value)``,
    delivered the way the frontend does, and the rerun."""
    el = keyed(at._tree, key)
    states = at._tree.get_widget_states()
    w = states.widgets.add()
    w.id = _make_trigger_id(el.proto.id, "events")
    w.json_trigger_value = json.dumps([{"event": event, "value": value}])
    return ok(at._run(states))


def click_tile(at: AppTest, i: int, j: int) -> AppTest:
    """A browser click on tile (i, j): the trigger value the component's script sends
    (``[n, i, j]`` with n from the data it was given)."""
    data = tilemap(at)
    return trigger(at, "tilemap", "tile", [data["steps"][i * data["Tc"] + j], i, j])


def slide_to(at: AppTest, n: int) -> AppTest:
    """The step slider released at n (it shows the current step and its range)."""
    data = json.loads(keyed(at._tree, "step_slider").proto.json)
    assert data["value"] == step(at) and data["last"] == len(trace_of(at).steps) - 1
    return trigger(at, "step_slider", "step", n)


# --- the default view --------------------------------------------------------------------------

def test_default_view_shows_the_first_step_of_the_first_look_preset():
    at = open_app()
    assert config(at) == DEFAULT
    trace = trace_of(at)
    z = grid(at)
    assert z.shape == (8, 8)
    assert (z == images.STATUS_CODE["skipped"]).sum() == trace.counts["skipped"] == 28
    assert_shows_step(at, 0)
    assert_shows(at, "step_tiles", images.step_tiles(trace, 0))
    assert_shows(at, "row_history", images.row_history(trace, 0, 0))
    np.testing.assert_array_equal(_png(tilemap(at)["src"]), images.tile_map(trace, 0).array())
    # the live math shows row 0's recorded numbers at step 0
    rm = row_math(trace, 0, 0)
    box = live_math(at)
    assert box == mathpanel.box_data(rm, box["notes"])
    assert fmt(rm.s_max) in box["latex"] and fmt(rm.l) in box["latex"]
    assert f"<mn>{abs(rm.s_max):.6g}</mn>" in box["mathml"]
    assert f"<mn>{rm.l:.6g}</mn>" in box["mathml"]
    assert any("28** skipped" in m.value for m in at.markdown)
    # the rows table is the state of step 0's rows
    rows = rows_table(at)
    np.testing.assert_array_equal(rows["row"], np.arange(16))
    np.testing.assert_allclose(rows["l new"], trace.steps[0].l, rtol=1e-4)  # 5 digits shown
    assert (rows["m old"] == -np.inf).all() and not rows["rescaled"].any()


# --- stepping ----------------------------------------------------------------------------------

def test_step_buttons_and_slider_move_the_cursor_and_the_outline():
    at = open_app()
    for _ in range(3):
        at.button(key="next").click().run()
    assert_shows_step(ok(at), 3)
    at.button(key="prev").click().run()
    assert_shows_step(ok(at), 2)
    last = len(trace_of(at).steps) - 1
    at.button(key="last").click().run()
    assert_shows_step(ok(at), last)
    assert at.button(key="next").disabled and at.button(key="last").disabled
    at.button(key="first").click().run()
    assert_shows_step(ok(at), 0)
    assert at.button(key="prev").disabled
    slide_to(at, 17)
    assert_shows_step(ok(at), 17)
    slide_to(at, 10**6)  # a value past the end (a stale page) lands on the last step
    assert_shows_step(at, last)
    trigger(at, "step_slider", "step", "7")  # not a number: ignored
    assert_shows_step(at, last)


def tick(at: AppTest) -> AppTest:
    """What the slider's script sends while playing, once the page shows the current step
    and the interval has passed: ``tick = `` the step it shows."""
    data = json.loads(keyed(at._tree, "step_slider").proto.json)
    assert data["playing"]
    return trigger(at, "step_slider", "tick", data["value"])


def test_play_advances_one_step_per_tick_pause_stops_and_the_end_stops_playing():
    at = open_app()
    at.select_slider(key="speed").set_value(4.0).run()
    at.button(key="play").click().run()
    assert at.session_state["playing"] and step(ok(at)) == 0
    assert json.loads(keyed(at._tree, "step_slider").proto.json)["wait_ms"] == 250
    tick(at)
    tick(at)
    assert_shows_step(ok(at), 2)
    at.button(key="play").click().run()  # pause
    assert not at.session_state["playing"]
    assert not json.loads(keyed(at._tree, "step_slider").proto.json)["playing"]
    at.run()
    assert step(ok(at)) == 2
    last = len(trace_of(at).steps) - 1
    slide_to(at, last - 1)
    at.button(key="play").click().run()
    tick(at)
    assert step(ok(at)) == last
    tick(at)  # the tick at the last step stops playing
    assert not at.session_state["playing"] and step(ok(at)) == last


def test_a_manual_step_pauses_auto_play():
    at = open_app()
    at.button(key="play").click().run()
    at.button(key="next").click().run()
    assert not at.session_state["playing"] and step(ok(at)) == 1


def test_clicking_a_tile_jumps_to_its_step_and_a_skipped_tile_explains_itself():
    at = open_app()
    trace = trace_of(at)
    target = trace.steps[22]
    click_tile(at, target.i, target.j)
    assert_shows_step(at, 22)
    click_tile(at, 0, 5)  # above the diagonal: skipped
    assert step(at) == 22
    assert any("Tile (0, 5) is skipped" in x.value for x in at.info)


# --- every control -----------------------------------------------------------------------------

def test_chunked_prefill_puts_the_diagonal_bottom_right_or_top_left():
    at = open_app()
    at.radio(key="mode").set_value("chunked").run()
    at.number_input(key="chunk").set_value(64).run()
    at.number_input(key="cache").set_value(96).run()
    cfg = config(ok(at))
    assert (cfg.Lq, cfg.Lk, cfg.q_offset) == (64, 160, None)
    expected = tile_status(64, 160, 16, 16, causal=True, q_offset=96)
    assert (grid(at) == 0).sum() == (expected == "skipped").sum()
    at.radio(key="align").set_value("top-left").run()
    top_left = tile_status(64, 160, 16, 16, causal=True, q_offset=0)
    assert config(ok(at)).q_offset == 0
    assert (grid(at) == 0).sum() == (top_left == "skipped").sum() > (expected == "skipped").sum()


def test_decode_is_one_row_walking_every_kv_tile(decode_loops):
    at = open_app()
    at.radio(key="mode").set_value("decode").run()
    at.number_input(key="cache").set_value(99).run()
    assert grid(ok(at)).shape == (1, math.ceil(100 / 16))
    assert (grid(at) == 0).sum() == 0
    note = [m.value for m in at.markdown if "Decode: the trace walks" in m.value]
    # the tiles' products are the decode kernel's on this host, and the page names them
    assert note and f"({products(decode_loops)}: tuned on this host" in note[0]
    # and how the timed kernel cuts the same keys (the fixture's tuning: 64-key tiles)
    n = numba.get_num_threads()
    assert (f"The decode call for B=1, Hkv=8 on this host's {n} thread{'s' * (n > 1)} takes "
            "tiles of 64 keys, not the sidebar's 16, in a single chunk, one tile after another "
            "as here.") in note[0]
    at.select_slider(key="Bc").set_value(64).run()
    note = [m.value for m in ok(at).markdown if "Decode: the trace walks" in m.value]
    assert "takes the same tiles as here, in a single chunk" in note[0]


def test_head_dim_and_block_sizes_shape_the_figures():
    at = open_app()
    at.select_slider(key="D").set_value(32).run()
    at.select_slider(key="Br").set_value(32).run()
    at.select_slider(key="Bc").set_value(8).run()
    assert grid(ok(at)).shape == (4, 16)
    trace = trace_of(at)
    assert trace.config.D == 32
    assert shown(at, "step_tiles")[1].endswith("rows 0–31 × keys 0–7")
    assert_shows(at, "step_tiles", images.step_tiles(trace, 0))


def test_masks_window_and_none():
    at = open_app()
    at.radio(key="mask").set_value("window").run()
    at.number_input(key="W").set_value(24).run()
    expected = tile_status(128, 128, 16, 16, causal=True, q_offset=0, window=24)
    assert (grid(ok(at)) == 0).sum() == (expected == "skipped").sum() > 28
    at.radio(key="mask").set_value("none").run()
    assert (grid(ok(at)) == 0).sum() == 0 and (grid(at) == images.STATUS_CODE["full"]).all()


def test_scenario_and_seed_change_the_inputs():
    at = open_app()
    before, _ = shown(at, "step_tiles")
    at.number_input(key="seed").set_value(5).run()
    after, _ = shown(ok(at), "step_tiles")
    assert before.shape == after.shape and not np.array_equal(before, after)
    assert_shows(at, "step_tiles", images.step_tiles(trace_of(at), 0))
    at.selectbox(key="scenario").set_value("sink").run()
    at.button(key="last").click().run()
    rows = rows_table(ok(at))  # sink: the max never moves after the first tile
    assert (rows["alpha"] == 1).all() and not rows["rescaled"].any()
    trace, n = trace_of(at), step(at)
    fig = images.row_history(trace, n, trace.config.rows(trace.steps[n].i)[0])
    assert fig.meta["rescale"] == []  # no triangle
    assert_shows(at, "row_history", fig)


def test_row_and_all_rows_controls_choose_what_the_row_panel_shows():
    at = open_app()
    slide_to(at, 10)
    at.number_input(key="row").set_value(5).run()
    trace = trace_of(ok(at))
    r = trace.config.rows(trace.steps[10].i)[0] + 5
    assert any(m.value.startswith(f"#### Live math: query row {r}, step 11\n")
               for m in at.markdown)
    assert fmt(row_math(trace, 10, r).l) in live_math(at)["latex"]
    assert_shows(at, "row_history", images.row_history(trace, 10, r))
    at.checkbox(key="all_rows").check().run()
    assert_shows(ok(at), "row_history", images.row_history(trace, 10, r, all_rows=True))


def test_batch_and_heads_drive_the_memory_panel_and_gqa_needs_whole_groups():
    at = open_app()
    at.number_input(key="B").set_value(2).run()
    at.number_input(key="Hq").set_value(16).run()
    at.number_input(key="Hkv").set_value(4).run()
    mem = table(ok(at), "what").set_index("what")["bytes"]
    assert mem["standard: S/P [B,Hq,Lq,Lk]"] == plots.bytes_label(4 * 2 * 16 * 128 * 128)
    assert mem["GQA copy of K/V (repeat_kv)"] == plots.bytes_label(2 * 4 * 2 * 16 * 128 * 16)
    at.number_input(key="Hkv").set_value(3).run()
    assert at.session_state["Hkv"] == 2
    assert any("Hkv=3 must divide Hq=16; using 2" in w.value for w in ok(at).warning)


def test_an_impossible_grid_raises_the_block_with_a_notice():
    at = open_app()
    at.number_input(key="L").set_value(4096).run()
    cfg = config(ok(at))
    assert cfg.Tr * cfg.Tc <= 8192 and cfg.Br > 16
    assert any("tile grid" in w.value for w in at.warning)


# --- presets, URL ------------------------------------------------------------------------------

def test_every_preset_loads_its_configuration():
    at = open_app()
    for name, preset in PRESETS.items():
        at.selectbox(key="preset").set_value(name).run()
        assert config(ok(at)) == preset.config, name
        c = preset.config
        assert grid(at).shape == (c.Tr, c.Tc)
        assert step(at) == 0 and at.session_state["preset"] is None
        assert any(f"Loaded **{name}**" in x.value for x in at.sidebar.caption)


def test_the_url_reopens_the_same_view():
    at = open_app()
    at.selectbox(key="preset").set_value("chunked prefill").run()
    slide_to(at, 9)
    at.number_input(key="row").set_value(3).run()
    params = dict(ok(at).query_params)
    again = open_app(**params)
    assert config(again) == PRESETS["chunked prefill"].config
    assert_shows_step(again, 9)
    assert again.session_state["row"] == 3
    assert outlined_tile(again) == outlined_tile(at)
    assert not again.warning


def test_bad_url_values_are_clamped_with_a_visible_notice():
    at = open_app(L="99999", Br="3", mode="sideways", seed="abc", step="100000", row="-4",
                  Hq="8", Hkv="3")
    cfg = config(at)
    expected, _ = clamp({"L": "99999", "Br": "3", "Hkv": "3"})
    assert cfg == expected
    last = len(trace_of(at).steps) - 1
    assert_shows_step(at, last)
    assert at.session_state["row"] == 0
    notes = "\n".join(w.value for w in at.warning)
    for fragment in ("L='99999' is outside", "Br=3 is not an offered size",
                     "mode='sideways' is not one of", "seed='abc' is not an integer",
                     f"step=100000 is outside [0, {last}]", "row=-4 is outside",
                     "Hkv=3 must divide Hq=8"):
        assert fragment in notes


def test_a_url_load_warns_only_about_values_it_named():
    """A default raised to fit (Bc for a long cache) is no one's mistake: no warning on the
    URL's load; a value the URL named and the sidebar's own changes still warn."""
    at = open_app(mode="decode", cache=4095, D=128)
    assert config(at).Bc > 16 and not at.warning
    assert not any(s.label.startswith("Q block Br") for s in at.sidebar.select_slider)
    assert any(c.value.startswith("Q block: the single query row") for c in at.sidebar.caption)
    at = open_app(mode="decode", cache=4095, Bc=16)
    assert any(w.value.startswith("Bc=16 for Lk=4096 is too small") for w in at.warning)
    at = open_app()
    at.number_input(key="L").set_value(4096).run()
    assert any("tile grid" in w.value for w in ok(at).warning)


def test_share_panel_shows_the_view_parameters_and_offers_downloads():
    at = open_app()
    assert not at.get("download_button")  # closed, it draws nothing (lazy)
    at.session_state["share"] = True  # opened
    at.button(key="next").click().run()
    assert any(m.value.startswith("`?mode=prefill&L=128") and m.value.endswith("&step=1&row=0`")
               for m in ok(at).markdown)
    keys = {d.key for d in at.get("download_button")}
    assert keys == {"dl_json", "dl_csv", "dl_png"}


# --- timing ------------------------------------------------------------------------------------

def open_tab(at: AppTest, label: str) -> AppTest:
    """Open the tab ``label`` ("Memory" or "Timing") below the step view."""
    at.session_state["panel"] = label
    return ok(at.run())


def test_only_the_open_tab_is_drawn():
    at = open_app()
    assert keyed(at._tree, "memory_chart") is not None
    assert keyed(at._tree, "run_timing") is None
    open_tab(at, "Timing")
    assert keyed(at._tree, "memory_chart") is None
    assert keyed(at._tree, "run_timing") is not None


# the timing panel's own tests: tests/test_timing_panel.py


@pytest.mark.parametrize("key", ["step_tiles", "row_history", "output_rows", "memory_chart"])
def test_every_figure_is_drawn(key):
    at = open_app()
    pixels, alt = shown(at, key)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 300 and alt
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # more than a blank


def test_output_rows_follow_the_finished_blocks():
    at = open_app()
    trace = trace_of(at)
    n = trace.block_done_after[2]  # Q blocks 0..2 finished
    slide_to(at, n)
    from attnviz.stats import oracle, output_error
    O_ref, lse_ref = oracle(trace)
    done, err_o, _ = output_error(trace, O_ref, lse_ref, n)
    assert done.sum() == 48
    assert_shows(ok(at), "output_rows", images.output_rows(trace, n, done, err_o))
    assert shown(at, "output_rows")[1] == f"output rows finished by step {n + 1}: 48 of 128"
    assert any("Rows finished: **48 / 128**" in m.value for m in at.markdown)
    at.button(key="next").click().run()  # the next block's first tile: same rows finished
    assert shown(ok(at), "output_rows")[1] == f"output rows finished by step {n + 2}: 48 of 128"
