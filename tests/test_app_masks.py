"""The masks of real models in the app (AppTest): the mask selector's new choices, the sink
logit, the four presets, their clamping and URL round trip. The tile map must show the
classes ``masks.tile_status`` gives (block sparsity) and the share of tiles computed; at the
last step every row must match the float64 oracle the app computes with the same mask."""
import re

import numpy as np
import pytest

from attnviz.masks import packed_doc_ids, tile_status
from attnviz.presets import PRESETS
from attnviz.viewconfig import MAX_DOCS, ViewConfig, clamp, from_query, to_query
from tests.test_app import config, grid, ok, open_app, slide_to, trace_of

NEW_PRESETS = ["StreamingLLM (sinks + window)", "three packed documents", "prefix-LM",
               "gpt-oss sink logits"]


def expected_status(cfg: ViewConfig) -> np.ndarray:
    kw = cfg.mask_kwargs()
    kw.pop("sink_logits", None)
    off = kw.pop("q_offset")
    off = cfg.Lk - cfg.Lq if off is None else off
    return tile_status(cfg.Lq, cfg.Lk, cfg.Br, cfg.Bc, q_offset=off,
                       **{k: v for k, v in kw.items() if v is not None})


def assert_map_and_share(at) -> None:
    """The tile map's classes are the mask's, and the heading states the share computed."""
    cfg = config(at)
    want = expected_status(cfg)
    codes = {"skipped": 0}
    assert ((grid(at) == codes["skipped"]) == (want == "skipped")).all()
    computed = int((want != "skipped").sum())
    share = f"**{computed}** of {want.size} tiles computed (**{100 * computed / want.size:.1f}%**"
    assert any(share in m.value for m in at.markdown), share


def assert_exact_at_the_end(at) -> None:
    """Step to the last tile: every row is finished and matches the app's float64 oracle."""
    last = len(trace_of(at).steps) - 1
    slide_to(at, last)
    text = next(m.value for m in ok(at).markdown if "Rows finished" in m.value)
    assert f"Rows finished: **{config(at).Lq} / {config(at).Lq}**" in text
    err_o, err_l = (float(x) for x in re.findall(r"oracle\| \*\*([0-9.e+-]+)\*\*", text))
    assert err_o < 1e-5 and err_l < 1e-5, text


@pytest.mark.parametrize("name", NEW_PRESETS)
def test_new_presets_show_their_block_sparsity_and_are_exact(name):
    at = open_app()
    at.selectbox(key="preset").set_value(name).run()
    cfg = config(ok(at))
    assert cfg == PRESETS[name].config
    assert_map_and_share(at)
    assert_exact_at_the_end(at)


def test_streamingllm_preset_skips_everything_between_sinks_and_window():
    at = open_app()
    at.selectbox(key="preset").set_value("StreamingLLM (sinks + window)").run()
    g = grid(ok(at))
    Tr = g.shape[0]
    assert (g[:, 0] != 0).all()  # the sink column: every Q block computes tile 0
    assert (g[Tr - 1, 1:Tr - 5] == 0).all()  # the last block skips the middle
    trace = trace_of(at)
    assert trace.config.mask.sinks == 4 and trace.config.mask.window == 128


def test_mask_selector_sinks_docs_prefix_with_their_inputs():
    at = open_app()
    at.radio(key="mask").set_value("sinks").run()
    at.number_input(key="W").set_value(32).run()
    at.number_input(key="sinks").set_value(8).run()
    cfg = config(ok(at))
    assert (cfg.mask, cfg.window, cfg.sinks) == ("sinks", 32, 8)
    assert_map_and_share(at)
    assert_exact_at_the_end(at)

    at.radio(key="mask").set_value("docs").run()
    at.number_input(key="docs").set_value(4).run()
    cfg = config(ok(at))
    assert np.array_equal(trace_of(at).config.mask.doc_ids, packed_doc_ids(cfg.Lk, 4))
    assert_map_and_share(at)
    g = grid(at)
    assert (g == 0).sum() > (expected_status(ViewConfig()) == "skipped").sum()  # > causal
    assert_exact_at_the_end(at)

    at.radio(key="mask").set_value("prefix").run()
    at.number_input(key="prefix").set_value(40).run()
    assert config(ok(at)).prefix == 40
    assert_map_and_share(at)
    assert (grid(at)[0, :3] != 0).all()  # block 0 (rows 0-15) sees keys up to 39
    assert_exact_at_the_end(at)


def test_sink_logit_is_the_initial_state_of_every_row():
    at = open_app()
    at.number_input(key="sink_logit").set_value(2.5).run()
    cfg = config(ok(at))
    assert cfg.sink_logit == 2.5 and not at.warning
    assert any("Every row starts from m = 2.5, l = 1" in c.value for c in at.sidebar.caption)
    first = trace_of(at).steps[0]
    assert (first.m_before == 2.5).all() and (first.l_before == 1.0).all()
    assert_exact_at_the_end(at)
    at.number_input(key="sink_logit").set_value(None).run()
    assert config(ok(at)).sink_logit is None
    assert (trace_of(at).steps[0].l_before == 0.0).all()


def test_mask_values_round_trip_through_the_url_and_are_clamped():
    cfg = ViewConfig(mask="docs", docs=5, sink_logit=-1.5)
    params = to_query(cfg)
    assert params["docs"] == "5" and params["sink_logit"] == "-1.5"
    assert "sinks" not in params and "prefix" not in params and "W" not in params
    assert clamp(from_query(params)) == (cfg, [])
    at = open_app(**params)
    assert config(at) == cfg

    at = open_app(mask="sinks", L="64", sinks="100", W="16", sink_logit="99", docs="1000")
    cfg = config(at)
    assert (cfg.sinks, cfg.sink_logit, cfg.docs) == (64, 30.0, MAX_DOCS)
    notes = "\n".join(w.value for w in at.warning)
    for fragment in ("sinks=100 exceeds Lk=64", "sink_logit='99' is outside [-30, 30]",
                     f"docs='1000' is outside [1, {MAX_DOCS}]"):
        assert fragment in notes, notes
    at = open_app(mask="prefix", prefix="0", sink_logit="abc")
    notes = "\n".join(w.value for w in at.warning)
    assert "prefix='0' is outside" in notes and "sink_logit='abc' is not a finite number" in notes
