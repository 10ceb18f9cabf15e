"""The masks of real models: attention sinks with a sliding window (StreamingLLM), packed
documents (doc_ids), prefix-LM and gpt-oss sink logits.

Every mask x {prefill, chunked, decode, rows before 0 / past the last key} x GQA x ragged
blocks, for the streaming kernel, the standard kernel and the traced driver, against the
float64 oracle (whose ``visible_mask`` is broadcast comparisons, not the kernels' spans).
Tile classes against the dense mask; NaN in the keys of skipped tiles never reaches the
output (that alone no longer tells a skipped tile from a computed one no row sees, since
partial tiles run per row group: ``tests/test_skipped_tiles.py`` shows directly that the
kernels never read those tiles); the sink logit entering split-KV decode exactly once;
bad combinations raising ValueError/TypeError that name the arguments.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnviz.masks import tile_status, visible_mask, visible_pairs
from attnviz.reference import attention_reference
from attnviz.trace import run_trace
from kernels import decode_split, standard_attention, streaming_attention
from tests.helpers import assert_matches_oracle, qkv, rel_err

B, HQ, HKV, D = 1, 4, 2, 16


def packed_docs(Lk: int, n: int, seed: int) -> np.ndarray:
    """n documents of random (ragged) lengths covering Lk keys, ids 0..n-1 (a gap: 10, 11...
    would do as well: only equality and order matter)."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, Lk), size=min(n - 1, Lk - 1), replace=False))
    return np.searchsorted(cuts, np.arange(Lk), side="right").astype(np.int64) + 7


def mask_kwargs(name: str, Lk: int, Hq: int = HQ) -> dict:
    sink = np.random.default_rng(Lk).normal(0.0, 2.0, Hq).astype(np.float32)
    W = max(1, Lk // 4 + 3)
    return {
        "sinks": {"window": W, "sinks": 5},
        "sinks_past_window": {"window": 3, "sinks": min(Lk, 40)},
        "docs": {"doc_ids": packed_docs(Lk, 4, Lk)},
        "docs_window": {"doc_ids": packed_docs(Lk, 3, Lk + 1), "window": W},
        "prefix": {"prefix": max(1, Lk // 3)},
        "sink_logits": {"sink_logits": sink},
        "sink_logits_streaming": {"window": W, "sinks": 4, "sink_logits": sink},
        "sink_logits_full": {"causal": False, "sink_logits": sink},
        "sink_logits_docs": {"doc_ids": packed_docs(Lk, 3, 5), "sink_logits": sink},
    }[name]


MASKS = ["sinks", "sinks_past_window", "docs", "docs_window", "prefix", "sink_logits",
         "sink_logits_streaming", "sink_logits_full", "sink_logits_docs"]
# name: (Lq, Lk, q_offset) -- q_offset None: bottom-right
MODES = {
    "prefill": (75, 75, None),
    "chunked": (29, 101, None),
    "chunked_top_left": (29, 101, 0),
    "decode": (1, 203, None),
    "rows_before_0": (40, 30, None),  # the first 10 rows see no key
    "rows_past_end": (20, 30, 25),  # rows at 30..44: past the last key
}


def _kw(mask: str, mode: str, Hq: int = HQ) -> tuple[int, int, dict]:
    Lq, Lk, off = MODES[mode]
    kw = mask_kwargs(mask, Lk, Hq)
    if off is not None and kw.get("causal", True):
        kw["q_offset"] = off
    return Lq, Lk, kw


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("mask", MASKS)
# (70, 200), (130, 48): Q blocks of more than tile.PARTIAL_ROWS rows, whose PARTIAL tiles run
# their products per row group over only the columns the group sees
@pytest.mark.parametrize("blocks", [(None, None), (7, 13), (16, 5), (70, 200), (130, 48)])
def test_streaming_matches_oracle(mask, mode, blocks):
    Lq, Lk, kw = _kw(mask, mode)
    q, k, v = qkv(B, HQ, HKV, Lq, Lk, D, seed=Lq + Lk)
    out, lse = streaming_attention(q, k, v, q_block=blocks[0], kv_block=blocks[1],
                                   return_lse=True, **kw)
    assert_matches_oracle(out, lse, q, k, v, **kw)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("Hq,Hkv,Lq,Lk,blocks", [
    (4, 2, 150, 260, (130, 48)),  # a chunk: 2 Q blocks, of 130 rows (groups of 64, 64, 2)
    (4, 2, 150, 260, (70, 31)),   # and of 70 rows (64, 6) against ragged KV tiles
    (136, 2, 1, 300, (None, 40)),  # decode, 68 heads per KV head: one block of 68 rows
    (130, 1, 1, 257, (None, 16)),  # decode, 130 heads on one KV head, many chunks
], ids=["chunk-130", "chunk-70", "decode-g68", "decode-g130"])
def test_row_groups_in_chunks_and_decode_match_oracle(mask, Hq, Hkv, Lq, Lk, blocks):
    """Blocks of more than ``tile.PARTIAL_ROWS`` rows in a chunked prefill (queries at the end
    of a longer cache) and in decode (the g heads of a KV head are the rows of one block):
    their partial tiles run per row group."""
    kw = mask_kwargs(mask, Lk, Hq)
    q, k, v = qkv(1, Hq, Hkv, Lq, Lk, D, seed=Hq + Lq + Lk)
    out, lse = streaming_attention(q, k, v, q_block=blocks[0], kv_block=blocks[1],
                                   return_lse=True, **kw)
    assert_matches_oracle(out, lse, q, k, v, **kw)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("mask", MASKS)
def test_standard_matches_oracle(mask, mode):
    Lq, Lk, kw = _kw(mask, mode)
    q, k, v = qkv(B, HQ, HKV, Lq, Lk, D, seed=2 * Lq + Lk)
    out, lse = standard_attention(q, k, v, return_lse=True, **kw)
    assert_matches_oracle(out, lse, q, k, v, **kw)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("mask", MASKS)
def test_trace_matches_oracle_and_tile_classes(mask, mode):
    Lq, Lk, kw = _kw(mask, mode, Hq=1)
    q, k, v = (x[0, 0] for x in qkv(1, 1, 1, Lq, Lk, D, seed=3 * Lq + Lk))
    if "sink_logits" in kw:
        kw["sink_logits"] = float(kw["sink_logits"][0])  # the traced head's number
    trace = run_trace(q, k, v, q_block=8, kv_block=11, **kw)
    O_ref, lse_ref = attention_reference(q, k, v, **kw)
    assert rel_err(trace.out, O_ref) <= 1e-5 and rel_err(trace.lse, lse_ref) <= 1e-5
    c = trace.config
    geo = {k_: kw[k_] for k_ in ("window", "sinks", "prefix", "doc_ids") if k_ in kw}
    expected = tile_status(Lq, Lk, 8, 11, causal=kw.get("causal", True),
                           q_offset=c.mask.q_offset, **geo)
    assert np.array_equal(trace.tile_status, expected)
    assert len(trace.steps) == int((expected != "skipped").sum())
    if "sink_logits" in kw and trace.steps:  # every row starts from m = s, l = 1
        first = trace.steps[0]
        assert np.all(first.m_before == np.float32(kw["sink_logits"]))
        assert np.all(first.l_before == 1.0)


@pytest.mark.parametrize("mask", ["sinks", "sinks_past_window", "docs", "docs_window", "prefix"])
@pytest.mark.parametrize("mode", ["prefill", "chunked", "chunked_top_left", "decode",
                                  "rows_before_0", "rows_past_end"])
@pytest.mark.parametrize("Br,Bc", [(1, 1), (4, 7), (8, 3), (16, 16), (13, 64)])
def test_tile_classes_against_the_dense_mask(mask, mode, Br, Bc):
    """A skipped tile holds no visible key, a full tile only visible keys, a partial tile
    both: exactly, on the dense mask written without spans."""
    Lq, Lk, kw = _kw(mask, mode)
    off = kw.pop("q_offset", Lk - Lq)
    status = tile_status(Lq, Lk, Br, Bc, causal=True, q_offset=off, **kw)
    vis = visible_mask(Lq, Lk, causal=True, q_offset=off, **kw)
    assert visible_pairs(Lq, Lk, causal=True, q_offset=off, **kw) == vis.sum()
    for i in range(status.shape[0]):
        for j in range(status.shape[1]):
            tile = vis[i * Br:(i + 1) * Br, j * Bc:(j + 1) * Bc]
            want = "full" if tile.all() else "skipped" if not tile.any() else "partial"
            assert status[i, j] == want, (i, j)


def test_visible_mask_rules_by_hand():
    """A few rows of the plain rules, written out."""
    vis = visible_mask(1, 12, causal=True, q_offset=9, window=3, sinks=2)
    assert np.flatnonzero(vis[0]).tolist() == [0, 1, 7, 8, 9]
    vis = visible_mask(1, 12, causal=True, q_offset=1, window=3, sinks=4)
    assert np.flatnonzero(vis[0]).tolist() == [0, 1]  # sinks stay causal
    vis = visible_mask(3, 12, causal=True, q_offset=2, prefix=5)
    assert [np.flatnonzero(r).tolist() for r in vis] == [[0, 1, 2, 3, 4]] * 3
    ids = [0, 0, 0, 1, 1, 2, 2, 2]
    vis = visible_mask(8, 8, causal=True, q_offset=0, doc_ids=ids)
    assert np.flatnonzero(vis[4]).tolist() == [3, 4]
    assert np.flatnonzero(vis[7]).tolist() == [5, 6, 7]
    assert not visible_mask(2, 8, causal=True, q_offset=7, doc_ids=ids)[1].any()  # p = 8


def test_cross_document_tiles_are_never_computed():
    """NaN in the values of document 0. Rows of later documents stay exact, in prefill and
    in decode (their blocks skip document 0's tiles; since partial tiles run per row group a
    computed tile that no row of a group sees would leave them exact too, so
    ``tests/test_skipped_tiles.py`` carries the "skipped" half: those tiles are unreadable
    there). The control (Q and KV blocks that straddle the
    boundary) shows the NaN does get through a computed tile: rows of both documents share
    the tile's products (0 * NaN in P~ V), while a block of document 1 alone, whose rows see
    none of those keys, leaves them out (``tile.PARTIAL_ROWS``)."""
    lens = [32, 48, 37, 43]  # document 0 fills KV tiles 0 and 1 of 16 keys exactly
    ids = np.repeat(np.arange(4), lens)
    Lk = ids.size
    q, k, v = qkv(B, HQ, HKV, Lk, Lk, D, seed=11)
    v[:, :, :32] = np.nan
    out, lse = streaming_attention(q, k, v, doc_ids=ids, q_block=16, kv_block=16,
                                   return_lse=True, check_finite=False)
    assert np.isnan(out[:, :, :32]).all()  # document 0 itself does read them
    clean = [x[:, :, 32:] for x in (q, k, v)]
    ref_O, ref_lse = attention_reference(clean[0], clean[1], clean[2], doc_ids=ids[32:])
    assert rel_err(out[:, :, 32:], ref_O) <= 1e-5 and rel_err(lse[:, :, 32:], ref_lse) <= 1e-5
    # decode: the last token of document 3 never reads document 0
    out1, lse1 = streaming_attention(q[:, :, -1:], k, v, doc_ids=ids, kv_block=16,
                                     return_lse=True, check_finite=False)
    assert rel_err(out1, ref_O[:, :, -1:]) <= 1e-5 and rel_err(lse1, ref_lse[:, :, -1:]) <= 1e-5
    # control: KV tile [24, 48) holds keys of documents 0 and 1, and Q block [24, 48) rows of
    # both, so its rows of document 1 (32..47) share the products over keys 24..31; block
    # [48, 72) (document 1 only) computes that tile without them
    ctl = streaming_attention(q, k, v, doc_ids=ids, q_block=24, kv_block=24,
                              check_finite=False)
    assert np.isnan(ctl[:, :, 24:48]).all() and not np.isnan(ctl[:, :, 48:]).any()


def test_sinks_window_skips_the_middle():
    """With sinks + window, NaN in the keys between the sinks and the window never reaches
    the output (``tests/test_skipped_tiles.py`` shows those tiles are never read)."""
    Lk, W, S = 400, 64, 4
    q, k, v = qkv(B, HQ, HKV, 1, Lk, D, seed=5)
    v[:, :, 64:320] = np.nan  # between the sink tile [0, 16) and the window [336, 400)
    kw = {"window": W, "sinks": S}
    out, lse = streaming_attention(q, k, v, kv_block=16, return_lse=True, check_finite=False,
                                   **kw)
    keep = np.r_[0:S, Lk - W:Lk]
    ref_O, ref_lse = attention_reference(q, k[:, :, keep], v[:, :, keep], causal=False)
    assert rel_err(out, ref_O) <= 1e-5 and rel_err(lse, ref_lse) <= 1e-5


@pytest.mark.parametrize("kw", [{}, {"window": 1500, "sinks": 4}, {"doc_ids": "two"}])
def test_decode_split_kv_adds_the_sink_logit_once(kw, monkeypatch):
    """Split-KV decode cuts the keys into C > 1 chunks; each chunk's partial state starts
    empty except one. A sink logit entering per chunk would add C - 1 extra exp(s - m)
    to the denominator; with s large it would dominate, so LSE and O would be far off."""
    monkeypatch.setenv("ATTNVIZ_AUTOTUNE", "off")  # the built-in 512-key chunks, not a tuned size
    Lk = 3001
    if kw.get("doc_ids") == "two":
        kw = {"doc_ids": np.repeat([0, 1], [700, Lk - 700])}
    per, C = decode_split(1, 1, Lk, 64, q_offset=Lk - 1, **kw)
    assert C > 1, "the test needs several chunks"
    q, k, v = qkv(1, 4, 1, 1, Lk, D, seed=3)
    sink = np.array([3.0, 0.0, -2.0, 8.0], np.float32)  # 8.0 dominates head 3's softmax
    for fn in (lambda **a: streaming_attention(q, k, v, kv_block=64, **a),
               lambda **a: standard_attention(q, k, v, **a)):
        out, lse = fn(sink_logits=sink, return_lse=True, **kw)
        assert_matches_oracle(out, lse, q, k, v, sink_logits=sink, **kw)


def test_a_row_that_sees_nothing_returns_zero_and_the_sink_logit():
    q, k, v = qkv(1, 2, 1, 12, 5, D, seed=1)  # rows 0..6 sit before position 0
    sink = np.array([1.5, -0.25], np.float32)
    for fn in (streaming_attention, standard_attention):
        out, lse = fn(q, k, v, sink_logits=sink, return_lse=True)
        assert np.all(out[:, :, :7] == 0.0)
        assert np.all(lse[0, 0, :7] == sink[0]) and np.all(lse[0, 1, :7] == sink[1])
        assert np.isfinite(lse).all()
    trace = run_trace(q[0, 0], k[0, 0], v[0, 0], sink_logits=1.5, q_block=4, kv_block=2)
    assert np.all(trace.out[:7] == 0.0) and np.all(trace.lse[:7] == np.float32(1.5))


def test_a_sink_logit_shrinks_the_output_by_its_softmax_weight():
    """O with a sink = O without it times (1 - w), w = exp(s - LSE_with): the sink takes
    w of the probability mass and contributes nothing."""
    q, k, v = qkv(1, 2, 2, 33, 33, D, seed=9)
    sink = np.array([0.5, 2.0], np.float32)
    o0 = streaming_attention(q, k, v)
    o1, lse1 = streaming_attention(q, k, v, sink_logits=sink, return_lse=True)
    w = np.exp(sink[None, :, None] - lse1.astype(np.float64))  # [1, Hq, Lq]
    assert np.allclose(o1, o0 * (1.0 - w[..., None]), atol=2e-6)


BAD = [
    ({"sinks": 4}, ValueError, "sinks=4 needs a sliding window"),
    ({"sinks": 4, "window": 8, "causal": False}, ValueError, "window requires causal"),
    ({"sinks": -1, "window": 8}, ValueError, "sinks=-1 is out of range"),
    ({"sinks": 2.5, "window": 8}, TypeError, "sinks must be an integer"),
    ({"prefix": 10, "window": 8}, ValueError, "prefix=10 and window=8 cannot be combined"),
    ({"prefix": 10, "causal": False}, ValueError, "prefix=10 needs causal=True"),
    ({"prefix": 1000}, ValueError, r"prefix=1000 is out of range.*\[0, 40\]"),
    ({"doc_ids": np.zeros(40, int), "causal": False}, ValueError, "doc_ids needs causal=True"),
    ({"doc_ids": np.zeros(40, int), "sinks": 2, "window": 4}, ValueError,
     "doc_ids cannot be combined with sinks=2"),
    ({"doc_ids": np.zeros(40, int), "prefix": 3}, ValueError,
     "doc_ids cannot be combined with sinks=0 or prefix=3"),
    ({"doc_ids": np.zeros(39, int)}, ValueError, r"doc_ids must have shape \[Lk\] = \(40,\)"),
    ({"doc_ids": np.r_[np.ones(20, int), np.zeros(20, int)]}, ValueError,
     r"doc_ids must be non-decreasing.*doc_ids\[19\]=1 > doc_ids\[20\]=0"),
    ({"doc_ids": np.zeros(40)}, TypeError, "doc_ids must be an integer array"),
    ({"sink_logits": np.zeros(3)}, ValueError, r"sink_logits must have shape \[Hq\] = \(4,\)"),
    ({"sink_logits": np.array([0, 0, np.inf, 0.0])}, ValueError, "sink_logits must be finite"),
    ({"sink_logits": np.array(["a"] * 4)}, TypeError, "sink_logits must be a float array"),
]


@pytest.mark.parametrize("kw,exc,match", BAD)
@pytest.mark.parametrize("Lq", [40, 1])
def test_bad_combinations_raise_naming_the_arguments(kw, exc, match, Lq):
    q, k, v = qkv(1, 4, 2, Lq, 40, D)
    for fn in (streaming_attention, standard_attention):
        with pytest.raises(exc, match=match):
            fn(q, k, v, **kw)
    if "sink_logits" not in kw:
        with pytest.raises(exc, match=match):
            run_trace(q[0, 0], k[0, 0], v[0, 0], **kw)


def test_trace_takes_one_sink_logit_per_traced_head():
    q, k, v = qkv(1, 1, 1, 10, 10, D)
    with pytest.raises(ValueError, match=r"sink_logits must have shape \[Hq\] = \(1,\)"):
        run_trace(q[0, 0], k[0, 0], v[0, 0], sink_logits=[1.0, 2.0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(Lq=st.integers(1, 60), Lk=st.integers(1, 60), Br=st.integers(1, 20),
       Bc=st.integers(1, 20), kind=st.sampled_from(["sinks", "docs", "docs_window", "prefix"]),
       offset=st.floats(0, 1), W=st.integers(1, 30), S=st.integers(1, 10),
       n_docs=st.integers(1, 6), sink=st.booleans(), seed=st.integers(0, 2**16))
def test_random_masks_kernels_trace_and_tiles(Lq, Lk, Br, Bc, kind, offset, W, S, n_docs, sink,
                                              seed):
    """Any geometry: streaming (prefill or decode), standard and the trace equal the oracle,
    and the tile classes equal the dense mask's."""
    q_offset = int(round((1 - Lq) + offset * (Lk - 1 - (1 - Lq))))  # in [1 - Lq, Lk - 1]
    kw = {"sinks": {"window": W, "sinks": min(S, Lk)},
          "docs": {"doc_ids": packed_docs(Lk, n_docs, seed)},
          "docs_window": {"doc_ids": packed_docs(Lk, n_docs, seed), "window": W},
          "prefix": {"prefix": min(S * 5, Lk)}}[kind]
    status = tile_status(Lq, Lk, Br, Bc, causal=True, q_offset=q_offset, **kw)
    vis = visible_mask(Lq, Lk, causal=True, q_offset=q_offset, **kw)
    for i in range(status.shape[0]):
        for j in range(status.shape[1]):
            tile = vis[i * Br:(i + 1) * Br, j * Bc:(j + 1) * Bc]
            assert status[i, j] == ("full" if tile.all() else
                                    "skipped" if not tile.any() else "partial")
    if sink:
        kw["sink_logits"] = np.linspace(-1.0, 2.0, HQ).astype(np.float32)
    q, k, v = qkv(1, HQ, HKV, Lq, Lk, 8, seed=seed)
    for out, lse in (streaming_attention(q, k, v, q_offset=q_offset, q_block=Br, kv_block=Bc,
                                         return_lse=True, **kw),
                     standard_attention(q, k, v, q_offset=q_offset, return_lse=True, **kw)):
        assert_matches_oracle(out, lse, q, k, v, q_offset=q_offset, **kw)
    if sink:
        kw["sink_logits"] = float(kw["sink_logits"][0])
    trace = run_trace(q[0, 0], k[0, 0], v[0, 0], q_offset=q_offset, q_block=Br, kv_block=Bc,
                      **kw)
    O_ref, lse_ref = attention_reference(q[0, 0], k[0, 0], v[0, 0], q_offset=q_offset, **kw)
    assert rel_err(trace.out, O_ref) <= 1e-5 and rel_err(trace.lse, lse_ref) <= 1e-5
    assert np.array_equal(trace.tile_status, status)
