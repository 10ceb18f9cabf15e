"""Kernel equivalence: streaming == standard == float64 oracle, on out and lse.

Ragged sizes (not multiples of the blocks), Lq < Lk with several offsets, sliding windows,
full attention, GQA ratios 1/2/4/8, decode from Lk = 1 to thousands, D in {16, 64, 128},
several block sizes, float16/32/64 inputs.
"""
from __future__ import annotations

import numpy as np
import pytest

from kernels import standard_attention, streaming_attention
from tests.helpers import assert_matches_oracle, qkv

PREFILL = [
    # B, Hq, Hkv, Lq, Lk, D, mask
    (1, 1, 1, 1, 1, 16, {}),
    (2, 2, 1, 37, 37, 16, {}),
    (1, 4, 2, 100, 100, 64, {}),
    (1, 8, 1, 65, 129, 64, {}),  # Lq < Lk: bottom-right by default
    (1, 2, 2, 33, 97, 16, {"q_offset": 0}),  # top-left alignment
    (1, 2, 2, 33, 97, 16, {"q_offset": 20}),
    (1, 2, 2, 50, 30, 16, {}),  # Lq > Lk: the first 20 rows see no key
    (1, 2, 2, 40, 40, 16, {"q_offset": -39}),  # only the last row sees a key
    (1, 4, 4, 77, 77, 64, {"window": 1}),
    (1, 4, 2, 77, 77, 64, {"window": 16}),
    (2, 4, 1, 70, 133, 128, {"window": 50}),
    (1, 4, 2, 45, 61, 64, {"causal": False}),
    (1, 8, 8, 129, 129, 128, {}),
]


@pytest.mark.nojit
@pytest.mark.parametrize("B,Hq,Hkv,Lq,Lk,D,mask", PREFILL[:8])
def test_prefill_small_blocks(B, Hq, Hkv, Lq, Lk, D, mask):
    q, k, v = qkv(B, Hq, Hkv, Lq, Lk, D, seed=Lq * 7 + Lk)
    out, lse = streaming_attention(q, k, v, q_block=8, kv_block=5, return_lse=True, **mask)
    assert out.dtype == np.float32 and lse.dtype == np.float32
    assert_matches_oracle(out, lse, q, k, v, **mask)


@pytest.mark.parametrize("B,Hq,Hkv,Lq,Lk,D,mask", PREFILL)
@pytest.mark.parametrize("blocks", [(None, None), (1, 1), (7, 13), (16, 64), (64, 32), (256, 256)])
def test_prefill_matches_oracle(B, Hq, Hkv, Lq, Lk, D, mask, blocks):
    q, k, v = qkv(B, Hq, Hkv, Lq, Lk, D, seed=Lq + 3 * Lk + D)
    out, lse = streaming_attention(q, k, v, q_block=blocks[0], kv_block=blocks[1],
                                   return_lse=True, **mask)
    assert_matches_oracle(out, lse, q, k, v, **mask)


@pytest.mark.parametrize("B,Hq,Hkv,Lq,Lk,D,mask", PREFILL)
def test_standard_matches_oracle(B, Hq, Hkv, Lq, Lk, D, mask):
    q, k, v = qkv(B, Hq, Hkv, Lq, Lk, D, seed=Lq + Lk)
    out, lse = standard_attention(q, k, v, return_lse=True, **mask)
    assert_matches_oracle(out, lse, q, k, v, **mask)


@pytest.mark.parametrize("Lk", [1, 2, 63, 64, 65, 511, 1000, 2049, 5003])
@pytest.mark.parametrize("Hq,Hkv", [(1, 1), (4, 2), (8, 2), (32, 8), (8, 1), (16, 1)])
def test_decode_matches_oracle(Lk, Hq, Hkv):
    q, k, v = qkv(2, Hq, Hkv, 1, Lk, 64, seed=Lk + Hq)
    out, lse = streaming_attention(q, k, v, return_lse=True)
    assert_matches_oracle(out, lse, q, k, v)
    out_s, lse_s = standard_attention(q, k, v, return_lse=True)
    assert_matches_oracle(out_s, lse_s, q, k, v)


@pytest.mark.nojit
@pytest.mark.parametrize("mask", [{}, {"window": 7}, {"q_offset": 3}, {"q_offset": 0},
                                  {"causal": False}])
def test_decode_masks(mask):
    q, k, v = qkv(1, 4, 2, 1, 300, 16, seed=5)
    out, lse = streaming_attention(q, k, v, kv_block=16, return_lse=True, **mask)
    assert_matches_oracle(out, lse, q, k, v, **mask)
    out_s, lse_s = standard_attention(q, k, v, return_lse=True, **mask)  # heads as rows
    assert_matches_oracle(out_s, lse_s, q, k, v, **mask)


def test_decode_many_chunks_is_split_exactly():
    """Long cache, few heads: the decode path splits Lk into chunks and merges them."""
    q, k, v = qkv(1, 2, 1, 1, 20_000, 128, seed=11)
    out, lse = streaming_attention(q, k, v, kv_block=64, return_lse=True)
    assert_matches_oracle(out, lse, q, k, v)


@pytest.mark.nojit
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dtypes(dtype):
    q, k, v = qkv(1, 2, 1, 21, 34, 16, dtype=dtype, seed=2)
    for fn in (streaming_attention, standard_attention):
        out, lse = fn(q, k, v, return_lse=True)
        assert out.dtype == np.float32 and out.shape == q.shape
        # the oracle sees the same values the kernel computed on (float16 rounded once)
        assert_matches_oracle(out, lse, q, k, v)


def test_explicit_scale():
    q, k, v = qkv(1, 2, 2, 30, 30, 16, seed=3)
    out, lse = streaming_attention(q, k, v, scale=0.7, return_lse=True, kv_block=8)
    assert_matches_oracle(out, lse, q, k, v, scale=0.7)


@pytest.mark.nojit
def test_row_that_sees_no_key_is_zero_not_nan():
    q, k, v = qkv(1, 1, 1, 10, 4, 16, seed=4)  # Lq > Lk: rows 0..5 sit before position 0
    for fn in (streaming_attention, standard_attention):
        out, lse = fn(q, k, v, return_lse=True)
        assert not np.isnan(out).any()
        assert np.all(out[0, 0, :6] == 0) and np.all(lse[0, 0, :6] == -np.inf)
        assert np.all(np.isfinite(lse[0, 0, 6:]))


@pytest.mark.nojit
def test_large_logits_do_not_overflow():
    """q scaled by 1e3: scores in the thousands; exp without the max would overflow."""
    q, k, v = qkv(1, 2, 1, 40, 40, 16, seed=6, spread=1e3)
    for fn in (streaming_attention, standard_attention):
        out, lse = fn(q, k, v, return_lse=True)
        assert np.all(np.isfinite(out)) and np.all(np.isfinite(lse))
        assert_matches_oracle(out, lse, q, k, v, rtol=1e-4)  # lse ~ 1e3: relative bound


@pytest.mark.nojit
def test_empty_query_returns_empty():
    q, k, v = qkv(1, 2, 1, 0, 5, 16)
    out, lse = streaming_attention(q, k, v, return_lse=True)
    assert out.shape == (1, 2, 0, 16) and lse.shape == (1, 2, 0)
    assert standard_attention(q, k, v).shape == (1, 2, 0, 16)


def test_streaming_and_standard_agree_at_length_1000():
    q, k, v = qkv(1, 4, 2, 1000, 1000, 64, seed=8)
    a = streaming_attention(q, k, v)
    b = standard_attention(q, k, v)
    assert np.abs(a - b).max() < 1e-5


@pytest.mark.nojit
def test_exp_polynomial_accuracy():
    """The vectorizable exp (degree-6 exp2 polynomial + exponent bits) against float64.

    Bound: relative error <= 1e-7 * (2 + |x|); the |x| part is float32's rounding of
    x * log2(e), which libm's expf shares. exp(-inf) and deep underflow give exactly 0.
    """
    from kernels.tile import exp_shifted

    x = np.concatenate([-np.geomspace(1e-6, 87, 20_000), np.linspace(-30, 0, 10_001),
                        [0.0, -np.inf, -200.0, -1e30]]).astype(np.float32)
    out = np.empty_like(x)
    total = exp_shifted(x, np.float32(0.0), out)
    exact = np.exp(x.astype(np.float64))
    normal = exact > 2.0**-125
    rel = np.abs(out[normal] - exact[normal]) / exact[normal]
    assert np.all(rel <= 1e-7 * (2 + np.abs(x[normal]))), rel.max()
    assert np.all(out[~normal] <= 2.0**-125) and np.all(out[-3:] == 0.0)
    assert total == pytest.approx(exact.sum(), rel=1e-5)
    # the shift is subtracted in float32 first, as the kernels do
    shifted = np.empty_like(x[:100])
    exp_shifted(x[:100] + np.float32(3.0), np.float32(3.0), shifted)
    np.testing.assert_allclose(shifted, out[:100], rtol=1e-6)


@pytest.mark.nojit
def test_masked_row_max_on_integer_keys_is_the_float_max():
    """mask_max takes the max on order-preserving int32 keys of the float bits (so it
    vectorizes): it must equal the float max over the span for any signs, -0.0, +-inf,
    denormals and empty spans, and write -inf outside the span."""
    from kernels.tile import mask_max

    rng = np.random.default_rng(11)
    specials = np.array([-np.inf, np.inf, -0.0, 0.0, 1e-45, -1e-45, -3e38, 3e38], np.float32)
    for trial in range(300):
        n = int(rng.integers(1, 70))
        row = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4)).astype(np.float32)
        if trial % 3 == 0:
            row[rng.integers(0, n, size=max(1, n // 4))] = rng.choice(specials)
        if trial % 5 == 0:
            row = -np.abs(row)  # every score negative
        lo = int(rng.integers(0, n + 1))
        hi = int(rng.integers(lo, n + 1))
        m_old = np.float32(rng.choice([-np.inf, 0.0, -5.0, 2.5]))
        expect = max(m_old, row[lo:hi].max()) if hi > lo else m_old
        work = row.copy()
        got = mask_max(work, lo, hi, m_old)
        assert got == expect, (trial, row, lo, hi, m_old, got)
        assert np.all(work[:lo] == -np.inf) and np.all(work[hi:] == -np.inf)
        np.testing.assert_array_equal(work[lo:hi], row[lo:hi])
