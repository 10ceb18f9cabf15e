"""The backward pass: streaming (FlashAttention-2) and standard gradients against the float64
analytic oracle, for every mask, GQA ratio, ragged blocks and decode-sized Lq; hypothesis
properties; torch autograd where torch is installed; bad input.

The forward's O and LSE come from ``streaming_attention(..., return_lse=True)``, as a
training step would pass them; dO is random (never zeros).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnviz.masks import packed_doc_ids, visible_mask
from attnviz.reference import attention_backward_reference
from kernels import standard_attention_backward, streaming_attention, streaming_attention_backward
from tests.helpers import qkv, rel_err

RTOL = 1e-5  # float32 kernels against the float64 oracle, relative to max |gradient|

CASES = [
    # B, Hq, Hkv, Lq, Lk, D, mask
    (1, 1, 1, 1, 1, 16, {}),
    (2, 2, 1, 37, 37, 16, {}),  # GQA 2, ragged
    (1, 4, 1, 65, 129, 64, {}),  # GQA 4, Lq < Lk: bottom-right
    (1, 8, 1, 33, 50, 16, {}),  # GQA 8
    (1, 2, 2, 33, 97, 16, {"q_offset": 0}),  # top-left alignment
    (1, 2, 2, 50, 30, 16, {}),  # Lq > Lk: the first 20 rows see no key
    (1, 2, 2, 40, 40, 16, {"q_offset": -39}),  # only the last row sees a key
    (1, 4, 2, 77, 77, 32, {"window": 1}),
    (2, 4, 1, 70, 133, 64, {"window": 50}),
    (1, 4, 2, 45, 61, 32, {"causal": False}),
    (1, 2, 1, 90, 90, 16, {"window": 20, "sinks": 4}),
    (1, 2, 2, 80, 80, 16, {"prefix": 30}),
    (1, 2, 1, 96, 96, 16, {"doc_ids": packed_doc_ids(96, 3)}),
    (1, 2, 1, 60, 96, 16, {"doc_ids": packed_doc_ids(96, 4)}),  # some rows see no key
    (1, 2, 1, 50, 60, 16, {"sink_logits": np.array([0.5, -1.0], np.float32)}),
    (1, 2, 2, 30, 30, 16, {"q_offset": -25, "sink_logits": np.array([1.0, 2.0], np.float32)}),
    (1, 4, 2, 1, 77, 32, {}),  # decode-sized Lq
    (1, 8, 2, 1, 300, 16, {"window": 64, "sinks": 4}),  # decode with a StreamingLLM mask
    (1, 2, 1, 3, 200, 16, {}),  # a few rows of a long cache
]


def _case(B, Hq, Hkv, Lq, Lk, D, mask, seed):
    q, k, v = qkv(B, Hq, Hkv, Lq, Lk, D, seed=seed)
    dout = np.random.default_rng(seed + 1).standard_normal(q.shape).astype(np.float32)
    out, lse = streaming_attention(q, k, v, return_lse=True, **mask)
    return q, k, v, out, lse, dout


def assert_grads_match(grads, q, k, v, dout, rtol=RTOL, **mask):
    want = attention_backward_reference(q, k, v, dout, **mask)
    for name, got, ref in zip(("dq", "dk", "dv"), grads, want, strict=True):
        assert got.dtype == np.float32 and got.shape == ref.shape, (name, got.shape)
        err = rel_err(got, ref)
        assert err <= rtol, f"{name}: rel err {err:.2e} > {rtol}"


def _ids(cases):
    return [f"{c[:6]}-{','.join(c[6]) or 'causal'}" for c in cases]


@pytest.mark.parametrize("B,Hq,Hkv,Lq,Lk,D,mask", CASES, ids=_ids(CASES))
@pytest.mark.parametrize("blocks", [(None, None), (1, 1), (7, 13), (16, 64), (64, 32)])
def test_streaming_backward_matches_oracle(B, Hq, Hkv, Lq, Lk, D, mask, blocks):
    q, k, v, out, lse, dout = _case(B, Hq, Hkv, Lq, Lk, D, mask, seed=Lq + 3 * Lk + D)
    grads = streaming_attention_backward(q, k, v, out, lse, dout, q_block=blocks[0],
                                         kv_block=blocks[1], **mask)
    assert_grads_match(grads, q, k, v, dout, **mask)


@pytest.mark.parametrize("B,Hq,Hkv,Lq,Lk,D,mask", CASES, ids=_ids(CASES))
def test_standard_backward_matches_oracle(B, Hq, Hkv, Lq, Lk, D, mask):
    q, k, v, out, lse, dout = _case(B, Hq, Hkv, Lq, Lk, D, mask, seed=Lq + Lk)
    grads = standard_attention_backward(q, k, v, out, lse, dout, **mask)
    assert_grads_match(grads, q, k, v, dout, **mask)


NOJIT = [CASES[i] for i in (1, 5, 8, 10, 12, 14, 16)]


@pytest.mark.nojit
@pytest.mark.parametrize("B,Hq,Hkv,Lq,Lk,D,mask", NOJIT, ids=_ids(NOJIT))
def test_backward_small_blocks(B, Hq, Hkv, Lq, Lk, D, mask):
    """Also the pure-Python path (make test-nojit): small blocks, every tile class."""
    q, k, v, out, lse, dout = _case(B, Hq, Hkv, Lq, Lk, D, mask, seed=Lq * 7 + Lk)
    assert_grads_match(streaming_attention_backward(q, k, v, out, lse, dout, q_block=8,
                                                    kv_block=5, **mask), q, k, v, dout, **mask)
    assert_grads_match(standard_attention_backward(q, k, v, out, lse, dout, **mask),
                       q, k, v, dout, **mask)


def test_larger_head_and_default_blocks():
    """D = 128 over several default tiles, GQA 4, causal and windowed."""
    for mask in ({}, {"window": 100}):
        q, k, v, out, lse, dout = _case(1, 4, 1, 300, 333, 128, mask, seed=5)
        assert_grads_match(streaming_attention_backward(q, k, v, out, lse, dout, **mask),
                           q, k, v, dout, **mask)


def test_float16_inputs_computed_in_float32():
    q, k, v, out, lse, dout = _case(1, 2, 1, 40, 40, 16, {}, seed=9)
    q16, k16, v16 = (x.astype(np.float16) for x in (q, k, v))
    out, lse = streaming_attention(q16, k16, v16, return_lse=True)
    grads = streaming_attention_backward(q16, k16, v16, out, lse, dout.astype(np.float16))
    assert_grads_match(grads, q16, k16, v16, dout.astype(np.float16))


_masks = st.sampled_from([{}, {"causal": False}, {"window": 5}, {"window": 9, "sinks": 2},
                          {"prefix": 7}, {"doc": 3}, {"sink": True}])


@settings(max_examples=40, deadline=None)
@given(Hkv=st.integers(1, 2), group=st.sampled_from([1, 2, 4]), Lq=st.integers(1, 40),
       Lk=st.integers(1, 40), D=st.sampled_from([4, 16]), Br=st.integers(1, 17),
       Bc=st.integers(1, 17), mask=_masks, seed=st.integers(0, 2**16))
def test_property_any_shape_and_blocks(Hkv, group, Lq, Lk, D, Br, Bc, mask, seed):
    """Any sizes, blocks and masks: the gradients equal the oracle's; and without a sink
    logit every row of dS sums to zero, so dk summed over the keys is zero."""
    Hq = Hkv * group
    mask = dict(mask)
    if "doc" in mask:
        mask = {"doc_ids": packed_doc_ids(Lk, mask.pop("doc"))}
    if mask.pop("sink", False):
        mask["sink_logits"] = np.linspace(-1, 1, Hq).astype(np.float32)
    for key in ("prefix", "sinks"):  # at most Lk
        if key in mask:
            mask[key] = min(mask[key], Lk)
    q, k, v, out, lse, dout = _case(1, Hq, Hkv, Lq, Lk, D, mask, seed=seed)
    dq, dk, dv = streaming_attention_backward(q, k, v, out, lse, dout, q_block=Br,
                                              kv_block=Bc, **mask)
    assert_grads_match((dq, dk, dv), q, k, v, dout, **mask)
    if "sink_logits" not in mask:
        # sum_c dK[c] = scale sum_r (sum_c dS[r, c]) Q_r = 0 (softmax rows sum to one)
        bound = 1e-5 * max(1.0, np.abs(dk).max()) * Lk
        assert np.abs(dk.sum(axis=2)).max() <= bound


@settings(max_examples=15, deadline=None)
@given(Lq=st.integers(2, 60), Br=st.integers(1, 32), Bc=st.integers(1, 32),
       seed=st.integers(0, 2**16))
def test_property_tiles_do_not_change_the_gradients(Lq, Br, Bc, seed):
    """Two tilings of the same problem agree to float32 rounding (the sums are reordered)."""
    q, k, v, out, lse, dout = _case(1, 2, 1, Lq, Lq, 16, {"window": 7}, seed=seed)
    a = streaming_attention_backward(q, k, v, out, lse, dout, window=7, q_block=Br,
                                     kv_block=Bc)
    b = streaming_attention_backward(q, k, v, out, lse, dout, window=7, q_block=64,
                                     kv_block=64)
    for x, y in zip(a, b, strict=True):
        assert rel_err(x, y.astype(np.float64)) <= RTOL


@pytest.mark.parametrize("mask", [{}, {"window": 16}, {"q_offset": 0}, {"causal": False},
                                  {"prefix": 20}])
def test_matches_torch_autograd(mask):
    torch = pytest.importorskip("torch", reason="torch is not installed: the comparison "
                                "with torch autograd needs it (the oracle tests still run)")
    q, k, v, out, lse, dout = _case(2, 4, 2, 48, 64, 32, mask, seed=11)
    Lq, Lk = q.shape[2], k.shape[2]
    vis = visible_mask(Lq, Lk, causal=mask.get("causal", True),
                       q_offset=mask.get("q_offset", Lk - Lq), window=mask.get("window", 0),
                       prefix=mask.get("prefix", 0))
    tq, tk, tv = (torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (q, k, v))
    to = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=torch.tensor(vis), enable_gqa=True)
    to.backward(torch.tensor(dout, dtype=torch.float64))
    grads = streaming_attention_backward(q, k, v, out, lse, dout, **mask)
    for name, got, t in zip(("dq", "dk", "dv"), grads, (tq, tk, tv), strict=True):
        err = rel_err(got, t.grad.numpy())
        assert err <= RTOL, f"{name} vs torch autograd: {err:.2e}"


def _good():
    q, k, v, out, lse, dout = _case(1, 2, 1, 10, 12, 8, {}, seed=1)
    return dict(q=q, k=k, v=v, out=out, lse=lse, dout=dout)


@pytest.mark.nojit
@pytest.mark.parametrize("fn", [streaming_attention_backward, standard_attention_backward])
@pytest.mark.parametrize("change,error,words", [
    ({"out": np.zeros((1, 2, 10, 7), np.float32)}, ValueError, "out must have the shape of q"),
    ({"dout": np.zeros((1, 2, 9, 8), np.float32)}, ValueError, "dout must have the shape"),
    ({"lse": np.zeros((1, 2, 11), np.float32)}, ValueError, "lse must have shape"),
    ({"lse": np.zeros((1, 2, 10, 1), np.float32)}, ValueError, "lse must have shape"),
    ({"out": np.zeros((1, 2, 10, 8), np.int32)}, TypeError, "out has dtype int32"),
    ({"dout": np.full((1, 2, 10, 8), np.nan, np.float32)}, ValueError, "dout contains NaN"),
    ({"lse": np.full((1, 2, 10), np.inf, np.float32)}, ValueError, "lse contains NaN or"),
    ({"lse": np.full((1, 2, 10), np.nan, np.float32)}, ValueError, "lse contains NaN or"),
    ({"k": np.zeros((1, 2, 12, 4), np.float32)}, ValueError, "k and v must have the same"),
    ({"k": np.ones((1, 3, 12, 8), np.float32), "v": np.ones((1, 3, 12, 8), np.float32)},
     ValueError, "multiple of KV heads"),
])
def test_bad_input_names_the_argument(fn, change, error, words):
    args = {**_good(), **change}
    with pytest.raises(error, match=words):
        fn(args["q"], args["k"], args["v"], args["out"], args["lse"], args["dout"])


@pytest.mark.nojit
def test_bad_mask_and_blocks():
    a = _good()
    args = (a["q"], a["k"], a["v"], a["out"], a["lse"], a["dout"])
    with pytest.raises(ValueError, match="sinks=2 needs a sliding window"):
        streaming_attention_backward(*args, sinks=2)
    with pytest.raises(ValueError, match="q_block must be a positive integer"):
        streaming_attention_backward(*args, q_block=0)
    with pytest.raises(ValueError, match="sink_logits must have shape"):
        streaming_attention_backward(*args, sink_logits=np.zeros(3, np.float32))


def test_rows_that_see_no_key_give_zero_gradients():
    """Lq > Lk: the first rows see no key (lse = -inf): dq is exactly 0 there."""
    q, k, v, out, lse, dout = _case(1, 2, 1, 30, 12, 8, {}, seed=4)
    assert np.isneginf(lse[:, :, :18]).all()
    dq, dk, dv = streaming_attention_backward(q, k, v, out, lse, dout)
    assert (dq[:, :, :18] == 0).all() and np.abs(dq[:, :, 18:]).max() > 0
    assert np.abs(dk).max() > 0 and np.abs(dv).max() > 0


def test_standard_backward_refuses_a_huge_matrix():
    a = _good()
    with pytest.raises(MemoryError, match="P and dS"):
        standard_attention_backward(a["q"], a["k"], a["v"], a["out"], a["lse"], a["dout"],
                                    max_bytes=100)


def test_skipped_tiles_are_never_computed():
    """Packed documents aligned with the tiles: the rows of document 0 are NaN (q, dO, and so
    O and LSE), checks off. Any computed cross-document tile would carry NaN into the keys of
    documents 1 and 2 (0 * NaN is NaN: with q_block=20 a computed partial tile does leak it,
    checked by hand); their gradients equal the oracle's instead."""
    L, docs = 96, packed_doc_ids(96, 3)  # documents [0, 32), [32, 64), [64, 96)
    q, k, v, _, _, dout = _case(1, 2, 1, L, L, 16, {}, seed=21)
    mask = {"doc_ids": docs}
    want = attention_backward_reference(q, k, v, dout, **mask)
    q[:, :, :32] = np.nan
    dout[:, :, :32] = np.nan
    out, lse = streaming_attention(q, k, v, return_lse=True, check_finite=False, **mask)
    dq, dk, dv = streaming_attention_backward(q, k, v, out, lse, dout, q_block=16,
                                              kv_block=16, check_finite=False, **mask)
    for got, ref in ((dq[:, :, 32:], want[0][:, :, 32:]), (dk[:, :, 32:], want[1][:, :, 32:]),
                     (dv[:, :, 32:], want[2][:, :, 32:])):
        assert np.isfinite(got).all()
        assert rel_err(got, ref) <= RTOL


def test_one_worker_or_all_give_the_same_gradients():
    """dQ from per-worker partials: 1 worker (no partials) and every thread agree to float32
    rounding, and a repeated call with the same threads is bit for bit the same."""
    import numba

    q, k, v, out, lse, dout = _case(2, 4, 2, 150, 150, 32, {"window": 40}, seed=8)
    a = streaming_attention_backward(q, k, v, out, lse, dout, window=40, q_block=16,
                                     kv_block=16)
    b = streaming_attention_backward(q, k, v, out, lse, dout, window=40, q_block=16,
                                     kv_block=16)
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        c = streaming_attention_backward(q, k, v, out, lse, dout, window=40, q_block=16,
                                         kv_block=16)
    finally:
        numba.set_num_threads(n)
    for x, y, z in zip(a, b, c, strict=True):
        np.testing.assert_array_equal(x, y)
        assert rel_err(x, z.astype(np.float64)) <= RTOL
