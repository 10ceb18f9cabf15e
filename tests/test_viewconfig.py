"""ViewConfig bounds, clamping notices, presets and the URL encoding."""
import itertools

import pytest

from attnviz.presets import DEFAULT_PRESET, PRESETS
from attnviz.viewconfig import (
    BLOCK_OPTIONS,
    DEFAULT,
    MAX_GRID,
    MAX_TILES,
    MAX_TRACE_LEN,
    ViewConfig,
    clamp,
    from_query,
    to_query,
)


def test_defaults_are_valid_and_the_first_look_preset():
    cfg, notices = clamp({})
    assert cfg == DEFAULT and notices == []
    assert PRESETS[DEFAULT_PRESET].config == DEFAULT


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_lie_within_bounds(name):
    cfg = PRESETS[name].config
    assert clamp(vars(cfg)) == (cfg, [])


def test_derived_sizes_per_mode():
    assert (ViewConfig(mode="prefill", L=100).Lq, ViewConfig(mode="prefill", L=100).Lk) == (100, 100)
    c = ViewConfig(mode="chunked", chunk=30, cache=70)
    assert (c.Lq, c.Lk, c.q_offset) == (30, 100, None)  # None: bottom-right default
    assert ViewConfig(mode="chunked", chunk=30, cache=70, align="top-left").q_offset == 0
    d = ViewConfig(mode="decode", cache=99)
    assert (d.Lq, d.Lk) == (1, 100)
    assert ViewConfig(mask="window", W=8).window == 8 and ViewConfig(W=8).window is None
    assert ViewConfig(mask="none").mask_kwargs() == {"causal": False, "q_offset": None,
                                                     "window": None}


def test_out_of_range_and_malformed_values_are_clamped_with_a_notice_each():
    cfg, notices = clamp({"L": "99999", "mode": "sideways", "D": "100", "seed": "x",
                          "Hq": "12", "Hkv": "5", "B": "0"})
    assert (cfg.L, cfg.mode, cfg.D, cfg.seed, cfg.Hkv, cfg.B) == (MAX_TRACE_LEN, "prefill", 96,
                                                                  0, 4, 1)
    text = "\n".join(notices)
    for fragment in ("L='99999' is outside", "mode='sideways' is not one of", "D=100 is not an "
                     "offered size; using 96", "seed='x' is not an integer", "Hkv=5 must "
                     "divide Hq=12; using 4", "B='0' is outside"):
        assert fragment in text
    # L = 4096 with the default 16 x 16 blocks would be a 256 x 256 grid: both blocks raised
    assert sum("tile grid" in n for n in notices) == 2 and len(notices) == 8


def test_fractional_numbers_are_not_integers():
    cfg, notices = clamp({"L": 12.5})
    assert cfg.L == DEFAULT.L and "not an integer" in notices[0]


def test_chunk_plus_cache_stays_within_the_trace_bound():
    cfg, notices = clamp({"mode": "chunked", "chunk": 1000, "cache": 4000})
    assert cfg.Lk == MAX_TRACE_LEN and cfg.cache == MAX_TRACE_LEN - 1000
    assert "cache=4000 + chunk 1000 exceeds" in notices[0]


@pytest.mark.parametrize("L,Br,Bc", [(4096, 1, 1), (4096, 1, 256), (4096, 16, 16), (3000, 2, 4),
                                     (129, 1, 1)])
def test_the_tile_grid_is_bounded_by_raising_blocks(L, Br, Bc):
    cfg, notices = clamp({"L": L, "Br": Br, "Bc": Bc})
    assert cfg.Tr <= MAX_GRID and cfg.Tc <= MAX_GRID and cfg.Tr * cfg.Tc <= MAX_TILES
    assert cfg.Br >= Br and cfg.Bc >= Bc
    assert cfg.Br in BLOCK_OPTIONS and cfg.Bc in BLOCK_OPTIONS
    if (cfg.Br, cfg.Bc) != (Br, Bc):
        assert any("tile grid" in n for n in notices)


def test_every_mode_mask_and_size_combination_is_clamped_to_something_traceable():
    for mode, mask, L, B in itertools.product(("prefill", "chunked", "decode"),
                                              ("causal", "window", "none"),
                                              (1, 4096, 10**6), (1, 256)):
        cfg, _ = clamp({"mode": mode, "mask": mask, "L": L, "chunk": L, "cache": L,
                        "Br": B, "Bc": B, "W": L})
        assert 1 <= cfg.Lq <= MAX_TRACE_LEN and 1 <= cfg.Lk <= MAX_TRACE_LEN
        assert cfg.Tr * cfg.Tc <= MAX_TILES


def test_url_round_trip_keeps_only_what_the_mode_uses():
    cfg = ViewConfig(mode="chunked", chunk=40, cache=200, align="top-left", mask="window",
                     W=33, D=32, Br=8, Bc=24, Hq=16, Hkv=4, B=2, scenario="sink", seed=7)
    params = to_query(cfg, step=5, row=2)
    assert "L" not in params and params["W"] == "33" and params["step"] == "5"
    assert clamp(from_query(params)) == (cfg, [])
    prefill = to_query(ViewConfig(L=77))
    assert {"chunk", "cache", "align", "W"}.isdisjoint(prefill) and prefill["L"] == "77"
