"""Issue 11 through AppTest: the "why it is exact" panel, the accumulator chart, the quiz and
the bug lab, read from what the page shows and checked against traces computed here; and a
random walk of their controls with no exception."""
from __future__ import annotations

import base64
import json
import random
from dataclasses import replace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from attnviz import run_trace
from attnviz.bugs import BUGS
from attnviz.exactness import accumulator, exactness
from attnviz.images import row_history
from attnviz.quiz import question
from attnviz.scenarios import one_head
from attnviz.stats import oracle
from attnviz.ui import rowtable
from attnviz.viewconfig import ViewConfig
from attnviz.why_images import why_figure
from tests.test_app import (
    APP,
    assert_shows,
    chart,
    config,
    keyed,
    live_math,
    ok,
    open_app,
    rows_table,
    shown,
)


def _trace(cfg: ViewConfig):
    """The trace the app should show, recomputed here (with its bug)."""
    q, k, v = one_head(cfg.scenario, cfg.Lq, cfg.Lk, cfg.D, seed=cfg.seed)
    return run_trace(q, k, v, q_block=cfg.Br, kv_block=cfg.Bc, bug=cfg.bug,
                     **cfg.mask_kwargs())


def _values(v):
    """A Plotly spec's array: a list, or a typed array {"dtype", "bdata" (base64)}."""
    if isinstance(v, dict):
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
    return np.asarray(v)


def _box(at, key):
    return json.loads(keyed(at._tree, key).proto.json)


def _no_exception(at):
    assert not at.exception, at.exception
    # the only errors the page may show here: the bug banner and a wrong prediction
    for e in at.error:
        assert e.value.startswith(("**Bug lab", "Not quite")), e.value
    return at


def _row(at, trace):
    n = at.session_state["step"]
    return n, trace.config.rows(trace.steps[n].i)[0] + at.session_state["row"]


@pytest.mark.parametrize("params", [dict(), dict(mode="decode", cache=40, Bc=16),
                                    dict(mode="chunked", chunk=20, cache=50, mask="window",
                                         W=24, Br=8, Bc=8)])
def test_why_panel_shows_the_invariant_on_the_live_numbers(params):
    at = open_app(**params)
    assert keyed(at._tree, "why_math") is None  # off by default: costs nothing
    at.toggle(key="why_open").set_value(True).run()
    trace = _trace(config(at))
    O_ref, _ = oracle(trace)
    for move in ("next", "last", None):  # the first step, the second, the last
        n, r = _row(at, trace)
        ex, acc = exactness(trace, r, n), accumulator(trace, r, n, O_ref)
        box = _box(at, "why_math")
        assert f"<mn>{ex.tiles[-1].partial:.6g}</mn>" in box["mathml"]
        assert ex.latex()[0] in box["latex"]
        table = _box(at, "why_tiles")
        assert len(table["rows"]) == len(ex.tiles)
        np.testing.assert_allclose([float(x[5]) for x in table["rows"]],
                                   [t.scaled for t in ex.tiles], rtol=1e-6)
        np.testing.assert_allclose([float(x[6]) for x in table["rows"]],
                                   [t.partial for t in ex.tiles], rtol=1e-6)
        # the figure is the one drawn here from the independent trace, pixel for pixel
        pixels, alt = shown(at, "why_chart")
        np.testing.assert_array_equal(pixels, why_figure(ex, acc).array())
        assert alt == f"why it is exact: row {r} at step {n + 1}"
        heading = next(m.value for m in at.markdown if m.value.startswith("#### Why it is"))
        assert f"M = {ex.M:.6g}" in heading or "no key" in heading
        if ex.last:
            assert "Last tile of this row" in heading
        if move and not at.button(key=move).proto.disabled:
            at.button(key=move).click().run()
            _no_exception(at)


def test_first_tile_says_nothing_to_rescale():
    at = open_app()
    rows = rows_table(at)  # step 0: every row's first tile
    data = json.loads(keyed(at._tree, "rows_table").proto.json)
    assert all(r[-1] == rowtable.FIRST_TILE for r in data["rows"])
    assert not rows["rescaled"].any()
    assert "First tile of this row: nothing to rescale (m_old = −∞)" in live_math(at)["notes"]


def test_quiz_flow_and_score():
    at = open_app()
    at.toggle(key="quiz_on").set_value(True).run()
    trace = _trace(config(at))
    expected = {"right": 0, "asked": 0}
    for right in (True, False, True):
        n = at.session_state["step"]
        q = question(trace, n, at.session_state["row"])
        radio = next(r for r in at.radio if r.key.startswith("quiz_choice_"))
        assert list(radio.options) == list(q.options)
        assert any(q.prompt in m.value for m in at.markdown)
        pick = q.answer if right else next(o for o in q.options if o != q.answer)
        radio.set_value(pick).run()
        at.button(key="quiz_reveal").click().run()
        _no_exception(at)
        if right:
            assert any(s.value.startswith(f"Right: {q.answer}. {q.reason}") for s in at.success)
        else:
            assert any(e.value.startswith("Not quite") and q.reason in e.value for e in at.error)
        expected["asked"] += 1
        expected["right"] += right
        assert at.session_state["quiz_score"] == expected
        at.button(key="next").click().run()
    assert at.session_state["quiz_score"] == {"right": 2, "asked": 3}
    # the score is on the page
    assert any("Score: 2 right of 3" in m.value for m in at.markdown)


@pytest.mark.parametrize("bug", list(BUGS))
def test_bug_selector_shows_the_buggy_numbers_and_goes_back(bug):
    params = dict(mode="chunked", chunk=24, cache=40, Br=8, Bc=8, mask="window", W=20,
                  scenario="large_logits")
    at = open_app(**params)
    at.selectbox(key="bug").set_value(bug).run()
    _no_exception(at)
    cfg = config(at)
    assert cfg.bug == bug and at.query_params["bug"] == bug
    trace = _trace(cfg)
    O_ref, _ = oracle(trace)
    first = trace.first_departure(O_ref)
    banner = keyed(at._tree, "bug_banner")
    assert banner is not None
    texts = [e.value for e in at.error] + [i.value for i in at.info]
    agree = "the rows finished so far still agree with the oracle"
    depart = "the finished rows depart from the oracle by the error below"
    if first is not None:
        assert any(f"First departure at step {first + 1}**" in t for t in texts)
        if first > 0:  # before the first departure the output caption does not claim one
            at.session_state["step"] = first - 1
            at.run()
            assert any(agree in m.value for m in at.markdown), bug
        at.button(key="bug_goto").click().run()
        assert at.session_state["step"] == first
        assert any(depart in m.value for m in at.markdown), bug
    else:
        assert any(agree in m.value for m in at.markdown), bug
    # the rows table shows the buggy loop's numbers
    n = at.session_state["step"]
    np.testing.assert_allclose(rows_table(at)["l new"], trace.steps[n].l, rtol=1e-4)
    spec = chart(at, "bug_errors")
    assert len(_values(spec["data"][0]["x"])) == cfg.Lq
    at.button(key="bug_off").click().run()
    ok(at)
    assert config(at).bug is None and keyed(at._tree, "bug_banner") is None
    assert "bug" not in at.query_params


def test_bug_in_the_url_and_garbage():
    at = open_app(mode="decode", cache=30, bug="no_max_subtraction", scenario="large_logits")
    assert config(at).bug == "no_max_subtraction"
    at = open_app(bug="<script>")
    assert config(at).bug is None
    assert any("bug='<script>' is not one of none, no_max_carry" in w.value for w in at.warning)


def test_random_walk_of_the_new_controls():
    rng = random.Random(11)
    at = open_app(L=48, Br=8, Bc=8)
    actions = ["why", "quiz", "bug", "next", "prev", "last", "first", "answer", "row",
               "mask", "mode"]
    for _ in range(40):
        a = rng.choice(actions)
        if a == "why":
            at.toggle(key="why_open").set_value(rng.random() < 0.7)
        elif a == "quiz":
            at.toggle(key="quiz_on").set_value(rng.random() < 0.7)
        elif a == "bug":
            at.selectbox(key="bug").set_value(rng.choice([None, *BUGS]))
        elif a in ("next", "prev", "last", "first"):
            b = at.button(key=a)
            if b.proto.disabled:
                continue
            b.click()
        elif a == "answer":
            radios = [r for r in at.radio if r.key.startswith("quiz_choice_")]
            if not radios or radios[0].proto.disabled:
                continue
            radios[0].set_value(rng.choice(list(radios[0].options))).run()
            _no_exception(at)
            at.button(key="quiz_reveal").click()
        elif a == "row":
            at.number_input(key="row").set_value(rng.randrange(0, 8))
        elif a == "mask":
            at.radio(key="mask").set_value(rng.choice(["causal", "window", "none", "sinks"]))
        else:
            at.radio(key="mode").set_value(rng.choice(["prefill", "decode", "chunked"]))
        at.run()
        _no_exception(at)


def test_a_broken_invariant_is_written_neq_on_the_page():
    """Under no_l_rescale the identity's two sides differ: the page writes ≠ and says the
    invariant is broken (MathML, LaTeX and the note); the correct loop writes = only."""
    base = dict(mode="prefill", L=128, D=16, Br=16, Bc=16, B=1, Hq=8, Hkv=8, seed=0,
                mask="none", scenario="random", step=3, row=1)
    for bug in ("no_l_rescale", None):
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params.update({k: str(v) for k, v in base.items()})
        if bug:
            at.query_params["bug"] = bug
        at = _no_exception(at.run())
        at.toggle(key="why_open").set_value(True).run()
        _no_exception(at)
        trace = _trace(config(at))
        n, r = _row(at, trace)
        ex = exactness(trace, r, n)
        box = _box(at, "why_math")
        assert ex.latex()[0] in box["latex"]
        if bug:
            t = ex.tiles[-1]
            assert abs(t.scaled - t.partial) > 1e-2 * t.partial
            assert f"<mn>{t.scaled:.6g}</mn><mo>≠</mo><mn>{t.partial:.6g}</mn>" in box["mathml"]
            assert r"\neq" in box["latex"] and "invariant broken" in box["latex"]
            assert box["notes"].startswith("The invariant is broken")
        else:
            assert "≠" not in box["mathml"] and r"\neq" not in box["latex"]
            assert box["notes"] == ""


def test_row_history_caption_says_the_bug_lets_m_fall():
    """Under no_max_carry on large logits m falls: the caption over the one-row chart says so
    (not "m only grows"), the chart is the buggy row's; without the bug, the old caption."""
    base = dict(mode="prefill", L=128, D=16, Br=16, Bc=16, B=1, Hq=8, Hkv=8, seed=0,
                mask="none", scenario="large_logits", step=3, row=0)
    for bug in ("no_max_carry", None):
        at = AppTest.from_file(APP, default_timeout=120)
        at.query_params.update({k: str(v) for k, v in base.items()})
        if bug:
            at.query_params["bug"] = bug
        at = _no_exception(at.run())
        trace = _trace(config(at))
        n, r = _row(at, trace)
        t = r - trace.config.rows(trace.steps[n].i)[0]
        fell = [s.j for s in trace.row_history(r) if s.n <= n
                and np.isfinite(s.m_before[t]) and s.m[t] < s.m_before[t]]
        text = next(m.value for m in at.markdown if m.value.startswith("#### One row"))
        assert_shows(at, "row_history", row_history(trace, n, r))
        if bug:
            assert fell, "m should fall in this buggy row"
            assert "m only grows;" not in text and "This bug lets m fall" in text
            assert f"KV block {', '.join(map(str, fell))}" in text
        else:
            assert not fell and "The running max m only grows" in text


def _open_with_bug(**params):
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({k: str(v) for k, v in params.items()})
    return _no_exception(at.run())


@pytest.mark.parametrize("params", [
    dict(mode="prefill", L=128, D=16, Br=16, Bc=16, mask="causal", bug="no_max_carry"),
    dict(mode="prefill", L=40, D=8, Br=8, Bc=8, mask="none", bug="no_max_subtraction"),
    # one KV tile per row: without a second tile m is never carried, so nothing to show
    dict(mode="decode", cache=8, D=8, Br=1, Bc=16, mask="causal", bug="no_max_carry"),
])
def test_an_overflow_bug_that_does_not_show_offers_large_logits(params):
    at = _open_with_bug(scenario="random", step=0, **params)
    cfg = config(at)
    trace = _trace(cfg)
    O_ref, _ = oracle(trace)
    assert trace.first_departure(O_ref) is None  # random inputs: the bug does not show
    large = _trace(replace(cfg, scenario="large_logits"))
    departs = large.first_departure(oracle(large)[0])
    info = " ".join(i.value for i in at.info)
    button = [b for b in at.button if b.key == "bug_large"]
    spec = chart(at, "bug_errors")
    assert "max |O − O₆₄|" in spec["layout"]["title"]["text"]
    assert "max |O − O₆₄|" in spec["layout"]["yaxis"]["title"]["text"]
    assert spec["layout"]["xaxis"]["title"]["text"] == "query row"
    if departs is None:
        assert not button and "large logits** scenario" not in info
        assert "Large logits do not show it on this configuration" in info
        return
    assert button and f"its rows depart from step {departs + 1} on" in info
    button[0].click().run()
    _no_exception(at)
    after = config(at)
    assert after.scenario == "large_logits" and after.bug == params["bug"]
    assert any(f"First departure at step {departs + 1}**" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "bug_large"]


def test_a_bug_that_departs_offers_no_scenario_switch():
    at = _open_with_bug(mode="prefill", L=64, D=8, Br=16, Bc=16, mask="none",
                        scenario="random", bug="no_l_rescale")
    assert any("First departure" in e.value for e in at.error)
    assert not [b for b in at.button if b.key == "bug_large"]


def test_why_note_under_a_bug_that_keeps_the_l_invariant():
    """no_acc_rescale leaves l right: its sums agree (=), and the note points at acc."""
    from attnviz.ui.why import notes
    cfg = ViewConfig(L=48, D=8, Br=8, Bc=8, mask="none", bug="no_acc_rescale")
    trace = _trace(cfg)
    n = trace.block_done_after[0]
    ex = exactness(trace, 0, n)
    assert len(ex.tiles) > 1 and not ex.broken and "≠" not in ex.mathml()
    assert notes(ex, "no_acc_rescale").startswith("The two sides still agree")
    assert notes(ex, None) == ""
    bad = exactness(_trace(ViewConfig(L=48, D=8, Br=8, Bc=8, mask="none",
                                      bug="no_l_rescale")), 0, n)
    if bad.broken:
        assert notes(bad, "no_l_rescale").startswith("The invariant is broken")
