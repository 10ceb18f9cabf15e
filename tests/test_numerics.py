"""The numerics lab's numbers against independent NumPy computations."""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from attnviz import numerics
from attnviz.reference import attention_reference


def test_exp_limits_are_ln_of_each_dtypes_largest_value():
    assert numerics.exp_limit(np.float32) == pytest.approx(math.log(3.4028234663852886e38))
    assert numerics.exp_limit(np.float16) == pytest.approx(math.log(65504.0))
    # bfloat16: 8 significand bits, float32's exponent range: (2 - 2^-7) 2^127
    assert numerics.exp_limit(ml_dtypes.bfloat16) == pytest.approx(
        math.log((2 - 2**-7) * 2.0**127))
    assert numerics.exp_limit(np.float16) == pytest.approx(11.09, abs=0.01)
    assert numerics.exp_limit(np.float32) == pytest.approx(88.72, abs=0.01)


def test_overflow_nan_starts_where_exp_of_the_top_logit_is_inf_in_that_dtype():
    o = numerics.overflow()
    for name, dt in numerics.OVERFLOW_DTYPES.items():
        # independent: float64 exp of the rounded top logit, then rounded to the dtype
        with np.errstate(over="ignore"):
            top = np.exp(o.x.astype(dt).astype(np.float64)).astype(dt)
        expected = float(o.x[np.isinf(top.astype(np.float64))][0])
        assert o.first_bad[name] == expected, name
        assert np.isnan(o.naive[name][o.x >= expected]).all()
        assert np.isfinite(o.safe[name]).all()  # the max subtracted: never NaN
    assert 88 < o.first_bad["float32"] <= 89 and 11 < o.first_bad["float16"] <= 11.5
    exact = np.exp(o.offsets) / np.exp(o.offsets).sum()
    small = o.x <= 5  # no overflow: the naive float32 softmax is right to float32 rounding
    assert (o.naive["float32"][small] < 1e-6).all()
    with np.errstate(over="ignore"):  # float16 between the sum's and exp's overflow: p = 0
        e = np.exp(np.float64(10.75) + o.offsets)
    assert e.sum() > 65504 and e.max() < 65504
    i = int(np.argmin(np.abs(o.x - 10.75)))
    assert o.naive["float16"][i] == pytest.approx(exact.max(), rel=1e-3)


def test_masked_rows_give_nan_without_the_guard_and_the_kernels_answer_with_it():
    mr = numerics.masked_rows(Br=5, Bc=7, D=8, empty=(0, 3))
    empty = np.array([True, False, False, True, False])
    assert np.array_equal(mr.m == -np.inf, empty)
    assert np.isnan(mr.P_raw[empty]).all() and not np.isnan(mr.P_raw[~empty]).any()
    assert np.isnan(mr.O_raw[empty]).all() and np.isnan(mr.lse_raw[empty]).all()
    assert (mr.P[empty] == 0).all() and (mr.l[empty] == 0).all() and (mr.O[empty] == 0).all()
    assert (mr.lse[empty] == -np.inf).all()
    np.testing.assert_array_equal(mr.O_kernel[empty], 0.0)
    assert (mr.lse_kernel[empty] == -np.inf).all()
    # the rows that see every key: both the guarded NumPy and the kernel match the oracle
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 8)).astype(np.float32)
    k = rng.standard_normal((7, 8)).astype(np.float32)
    v = rng.standard_normal((7, 8)).astype(np.float32)
    O_ref, lse_ref = attention_reference(q, k, v, causal=False)
    for O, lse in ((mr.O, mr.lse), (mr.O_kernel, mr.lse_kernel)):
        np.testing.assert_allclose(O[~empty], O_ref[~empty], atol=1e-5)
        np.testing.assert_allclose(lse[~empty], lse_ref[~empty], atol=1e-5)


def test_standard_low_in_float64_is_the_oracle():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((n, 16)) for n in (20, 33, 33))
    for causal in (True, False):
        O = numerics.standard_low(q, k, v, np.float64, causal=causal)
        np.testing.assert_allclose(O, attention_reference(q, k, v, causal=causal)[0],
                                   atol=1e-12)
    assert numerics.standard_low(q, k, v, ml_dtypes.bfloat16).dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_error_sweep_measures_against_an_independent_float64_reference(dtype):
    stds = (1.0, 16.0, 128.0)
    e = numerics.error_sweep(dtype, logit_stds=stds, L=96, D=32, seed=5)
    dt = numerics.LOW[dtype]
    q0, k, v = numerics._inputs(96, 96, 32, 5)
    for n, s in enumerate(stds):
        qr, kr, vr = ((x.astype(dt)).astype(np.float64) for x in (s * q0, k, v))
        S = qr @ kr.T / math.sqrt(32)
        S[np.triu_indices(96, 1)] = -np.inf  # causal, square
        P = np.exp(S - S.max(axis=1, keepdims=True))
        O_ref = (P / P.sum(axis=1, keepdims=True)) @ vr
        floor = np.abs(O_ref.astype(dt).astype(np.float64) - O_ref).max()
        assert e.floor[n] == pytest.approx(floor, rel=1e-12)
        assert e.streaming_fp32[n] < 1e-5 * max(1.0, s)  # the algorithm itself: fp32 rounding
        assert e.floor[n] <= e.streaming[n] <= 2.5 * e.floor[n]  # output rounding dominates
    assert e.standard[-1] > 10 * e.streaming[-1]  # large logits: low-precision S loses


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_accumulation_in_low_precision_is_one_rounding_per_add(dtype):
    Lk, D, rows = 80, 4, 2
    a = numerics.accumulation(dtype, Lk=Lk, D=D, rows=rows, seed=2)
    dt = numerics.LOW[dtype]
    q, k, v = numerics._inputs(rows, Lk, D, 2)
    q, k, v = (x.astype(dt).astype(np.float32) for x in (q, k, v + 1.0))
    P = np.exp((q @ k.T) / np.float32(math.sqrt(D)) - ((q @ k.T) / np.float32(math.sqrt(D)))
               .max(axis=1, keepdims=True))
    for t, n in enumerate(a.n):
        acc = np.zeros((rows, D), dt)
        l = np.zeros(rows, np.float32)
        for c in range(n):  # a plain loop: add, round to the dtype, repeat
            acc = (acc.astype(np.float32) + (P[:, c, None] * v[c]).astype(dt)
                   .astype(np.float32)).astype(dt)
            l = l + P[:, c]
        W = np.exp(q.astype(np.float64) @ k[:n].T.astype(np.float64) / math.sqrt(D))
        ref = W @ v[:n].astype(np.float64) / W.sum(axis=1, keepdims=True)
        got = acc.astype(np.float32) / l[:, None]
        assert a.err_low[t] == pytest.approx(np.abs(got - ref).max(), rel=1e-3, abs=1e-6)
    assert (a.err_fp32 < 1e-5).all()
    assert a.err_low.max() > 100 * a.err_fp32.max()


def test_unknown_dtype_is_refused_by_name():
    with pytest.raises(ValueError, match="dtype must be one of float16, bfloat16, got 'int8'"):
        numerics.error_sweep("int8")
