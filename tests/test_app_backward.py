"""The Backward tab through AppTest: it steps the backward's own loop order with its own
controls, and its numbers (steps, rows' LSE and D, FLOPs) are those of a backward trace built
here from the same inputs."""
from __future__ import annotations

import re

import numpy as np
from streamlit.testing.v1 import AppTest

from attnviz.backward_trace import run_backward_trace, total_flops
from attnviz.scenarios import generate
from attnviz.viewconfig import DEFAULT, ViewConfig
from tests.test_app import APP, ok


def open_backward(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({k: str(v) for k, v in params.items()})
    ok(at.run())
    at.session_state["panel"] = "Backward"
    return ok(at.run())


def trace_of(g: int, **params):
    cfg = ViewConfig(**{**DEFAULT.__dict__, **params})
    q, k, v = generate(cfg.scenario, cfg.Lq, cfg.Lk, cfg.D, B=1, Hq=g, Hkv=1, seed=cfg.seed)
    dout = np.random.default_rng(cfg.seed + 1).standard_normal(q[0].shape).astype(np.float32)
    return run_backward_trace(q[0], k[0, 0], v[0, 0], dout, q_block=cfg.Br, kv_block=cfg.Bc,
                              **cfg.mask_kwargs())


def step_heading(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("#### Backward step "))


def text(at: AppTest, start: str) -> str:
    return next(m.value for m in at.markdown if m.value.startswith(start))


def test_backward_tab_steps_in_kv_outer_order_with_the_traces_numbers():
    params = dict(L=70, D=16, Br=16, Bc=16, seed=3)
    at = open_backward(**params)
    t = trace_of(1, **params)
    s0 = t.steps[0]
    assert step_heading(at).startswith(f"#### Backward step 1 of {len(t.steps)}: KV block "
                                       f"{s0.j} ")
    rows = next(d.value for d in at.dataframe if d.value.columns[0] == "row")
    i0, i1 = t.config.rows(s0.i)
    np.testing.assert_allclose(rows["LSE"].to_numpy(), t.lse[0, i0:i1], rtol=1e-6)
    np.testing.assert_allclose(rows["D"].to_numpy(), t.D[0, i0:i1], rtol=1e-6)
    # the P check in scientific notation (0.00000002 read as a row of zeros)
    gap = np.abs(s0.P - s0.P_fwd).max(axis=1)
    assert list(rows["max |P − P~/l|"]) == [f"{x:.2e}" for x in gap]
    assert all(re.fullmatch(r"\d\.\d\de[-+]\d\d", x) for x in rows["max |P − P~/l|"])
    # the live math opens on the tile's last row, which sees all the tile's keys (row 0 of a
    # diagonal tile sees one key: P = 1, dP = D, and dS only float32 rounding)
    k0 = t.config.keys(s0.j)[0]
    assert at.number_input(key="bwd_row").value == i1 - i0 - 1
    assert any(m.value.startswith(f"#### Live math: row {i1 - 1}, key {k0}, step 1")
               for m in at.markdown)
    bwd, fwd = total_flops(t)
    work = text(at, "#### Work and memory")
    assert f"**{bwd:,}** vs {fwd:,} = **2.50×**" in work
    # Next walks down the column of KV block 0 (Q blocks inner), then to KV block 1
    for n in range(1, len(t.steps)):
        ok(at.button(key="bwd_next").click().run())
        s = t.steps[n]
        assert step_heading(at).startswith(f"#### Backward step {n + 1} of {len(t.steps)}: "
                                           f"KV block {s.j} "), n
        assert f"Q block {s.i} " in step_heading(at)
        if n == 3:
            break
    ok(at.button(key="bwd_prev").click().run())
    assert step_heading(at).startswith(f"#### Backward step 3 of {len(t.steps)}")
    at.slider(key="bwd_slider").set_value(len(t.steps))  # 1-based
    ok(at.run())
    last = len(t.steps)
    assert step_heading(at).startswith(f"#### Backward step {last} of {last}")


def test_backward_tab_window_and_gqa_group():
    params = dict(L=64, D=16, Br=16, Bc=16, mask="window", W=20, Hq=8, Hkv=2)
    at = open_backward(**params)
    t = trace_of(4, **params)
    assert "skipped" in t.tile_status
    head = step_heading(at)
    assert f"of {len(t.steps)}:" in head and "query head 0 of 4" in head
    n_col0 = sum(1 for s in t.steps if s.j == 0)
    at.slider(key="bwd_slider").set_value(n_col0 // 4 + 1)  # head 1, KV block 0
    ok(at.run())
    assert "query head 1 of 4" in step_heading(at)


def test_backward_tab_caps_long_sequences_with_a_notice():
    at = open_backward(L=1024, D=16, Br=64, Bc=64)
    notes = [i.value for i in at.info]
    assert any("limited to 256 keys: traced with Lq = 256, Lk = 256" in x for x in notes)
    assert re.search(r"#### Backward step 1 of \d+", step_heading(at))


def test_too_many_tiles_is_a_message_before_any_tracing():
    at = open_backward(L=256, D=16, Br=2, Bc=2)
    notes = [i.value for i in at.info]
    found = [re.search(r"^(\d+) × (\d+) tiles × 1 head\(s\) = (\d+) tiles: choose larger "
                       r"blocks", x) for x in notes]
    m = next(f for f in found if f)
    Tr, Tc, n = (int(x) for x in m.groups())
    assert Tr == 128 and Tr * Tc == n > 4096  # the sidebar's clamping allows 8192
    assert not [m for m in at.markdown if m.value.startswith("#### Backward step ")]
