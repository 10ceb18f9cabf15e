"""Non-finite inputs, against the float64 oracle on ragged shapes.

* The default check looks at the result (O and LSE) and scans the inputs only when it is not
  finite, to name the argument: the same clear error as before for a NaN/Inf a row sees.
* With ``check_finite=False`` a NaN shows up as NaN in exactly the rows that see it (a NaN
  in q: its row; in k: the rows that see that key); every other row matches the oracle, and a
  row that sees no key keeps O = 0, LSE = -inf. A NaN in v also reaches the rows that share a
  computed tile with it (0 * NaN = NaN in P~ V), and no row whose Q block never visits it.
* In decode the NaN's chunk is merged with the others (split-KV), with the decode tiles
  through BLAS and through plain loops.
"""
from __future__ import annotations

import numpy as np
import pytest

from attnviz.masks import visible_mask
from attnviz.reference import attention_reference
from kernels import standard_attention, streaming_attention
from tests.helpers import RTOL, qkv, rel_err

POS_NAN = np.float32(np.nan)
NEG_NAN = np.copysign(np.float32(np.nan), np.float32(-1.0))  # the x86 default NaN's sign


def _vis(Lq, Lk, q_offset):
    return visible_mask(Lq, Lk, causal=True, q_offset=q_offset)  # [Lq, Lk] bool


def _check_rows(out, lse, O_ref, lse_ref, nan_rows):
    """Rows in ``nan_rows`` [.., Lq] are NaN throughout (O and LSE); the others match."""
    assert np.isnan(out[nan_rows]).all() and np.isnan(lse[nan_rows]).all()
    keep = ~nan_rows
    assert rel_err(out[keep], O_ref[keep]) <= RTOL
    assert rel_err(lse[keep], lse_ref[keep]) <= RTOL


@pytest.mark.parametrize("fn", [streaming_attention, standard_attention])
@pytest.mark.parametrize("nan", [POS_NAN, NEG_NAN], ids=["+nan", "-nan"])
@pytest.mark.parametrize("Lq,Lk,q_offset,c", [(37, 53, 16, 20), (29, 29, -5, 0),
                                              (70, 131, 61, 100), (45, 45, 0, 44)])
def test_a_nan_key_makes_exactly_the_rows_that_see_it_nan(fn, nan, Lq, Lk, q_offset, c):
    B, Hq, Hkv, D = 2, 4, 2, 24
    q, k, v = qkv(B, Hq, Hkv, Lq, Lk, D, seed=Lq + c)
    O_ref, lse_ref = attention_reference(q, k, v, q_offset=q_offset)  # the clean inputs
    k[1, 0, c, 5] = nan  # batch 1, KV head 0: query heads 0 and 1
    kw = {"q_block": 16, "kv_block": 16} if fn is streaming_attention else {}
    out, lse = fn(q, k, v, q_offset=q_offset, return_lse=True, check_finite=False, **kw)
    nan_rows = np.zeros((B, Hq, Lq), bool)
    nan_rows[1, :2] = _vis(Lq, Lk, q_offset)[:, c]
    assert nan_rows.any()
    _check_rows(out, lse, O_ref, lse_ref, nan_rows)
    blind = ~_vis(Lq, Lk, q_offset).any(axis=1)  # rows before position 0: no key
    assert (out[:, :, blind] == 0).all() and (lse[:, :, blind] == -np.inf).all()


@pytest.mark.parametrize("fn", [streaming_attention, standard_attention])
@pytest.mark.parametrize("nan", [POS_NAN, NEG_NAN], ids=["+nan", "-nan"])
def test_a_nan_query_row_is_nan_alone(fn, nan):
    q, k, v = qkv(1, 3, 1, 41, 66, 16, seed=3)
    O_ref, lse_ref = attention_reference(q, k, v)
    q[0, 2, 17, 0] = nan
    out, lse = fn(q, k, v, return_lse=True, check_finite=False)
    nan_rows = np.zeros((1, 3, 41), bool)
    nan_rows[0, 2, 17] = True
    _check_rows(out, lse, O_ref, lse_ref, nan_rows)


@pytest.mark.parametrize("nan", [POS_NAN, NEG_NAN], ids=["+nan", "-nan"])
def test_a_row_whose_only_key_is_nan_is_nan_not_zeros(nan):
    """Top-left alignment: row 0 sees key 0 only (and every later row sees it too). Its
    score is NaN; a max that skips the NaN would call row 0 a row with no key: zeros."""
    q, k, v = qkv(1, 2, 2, 9, 9, 8, seed=5)
    k[0, 1, 0, :] = nan
    for fn in (streaming_attention, standard_attention):
        out, lse = fn(q, k, v, q_offset=0, return_lse=True, check_finite=False)
        assert np.isnan(out[0, 1]).all() and np.isnan(lse[0, 1]).all()
        assert np.isfinite(out[0, 0]).all() and np.isfinite(lse[0, 0]).all()


@pytest.mark.parametrize("nan", [POS_NAN, NEG_NAN], ids=["+nan", "-nan"])
@pytest.mark.parametrize("Lk,c,window", [(3000, 1234, None), (701, 0, None), (2500, 2400, 300),
                                         (2500, 100, 300)])
def test_decode_a_nan_key_reaches_its_group_through_the_merge(decode_loops, nan, Lk, c, window):
    B, Hq, Hkv, D = 2, 8, 2, 32
    q, k, v = qkv(B, Hq, Hkv, 1, Lk, D, seed=Lk + c)
    O_ref, lse_ref = attention_reference(q, k, v, window=window)
    k[0, 1, c, 3] = nan
    out, lse = streaming_attention(q, k, v, window=window, return_lse=True, check_finite=False)
    seen = window is None or c >= Lk - window
    nan_rows = np.zeros((B, Hq, 1), bool)
    nan_rows[0, 4:, 0] = seen  # KV head 1 serves query heads 4..7
    _check_rows(out, lse, O_ref, lse_ref, nan_rows)


def test_a_nan_value_reaches_the_rows_that_see_it_and_no_unvisited_block():
    B, Hq, Lq, Lk, D, Br, Bc, c = 1, 2, 70, 70, 16, 16, 16, 40
    q, k, v = qkv(B, Hq, 1, Lq, Lk, D, seed=9)
    O_ref, lse_ref = attention_reference(q, k, v)
    v[0, 0, c, 7] = np.nan
    out, lse = streaming_attention(q, k, v, q_block=Br, kv_block=Bc, return_lse=True,
                                   check_finite=False)
    vis = _vis(Lq, Lk, 0)
    assert np.isnan(out[0][:, vis[:, c], 7]).all()  # every row that sees it (at d = 7)
    tile = slice(c // Bc * Bc, (c // Bc + 1) * Bc)
    visits = np.repeat([vis[i:i + Br, tile].any() for i in range(0, Lq, Br)], Br)[:Lq]
    assert rel_err(out[0, :, ~visits], O_ref[0, :, ~visits]) <= RTOL  # blocks never there
    assert rel_err(lse, lse_ref) <= RTOL  # the scores never saw v


@pytest.mark.parametrize("fn", [streaming_attention, standard_attention])
@pytest.mark.parametrize("name", ["q", "k", "v"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("Lq", [1, 23])
def test_the_default_check_names_the_input(fn, name, bad, Lq):
    q, k, v = qkv(1, 4, 2, Lq, 77, 16, seed=Lq)
    x = {"q": q, "k": k, "v": v}[name]
    x[0, 1, x.shape[2] - 1, 2] = bad  # the last row / key: seen by the last query row
    if name == "k" and bad == np.inf:
        q[0, 2:, -1, 2] = 1.0  # a positive product: +inf score, the row goes NaN
    with pytest.raises(ValueError, match=rf"^{name} contains NaN or Inf; attention inputs "
                                         r"must be finite \(pass check_finite=False"):
        fn(q, k, v)


def test_a_nan_no_row_sees_leaves_the_result_exact_and_raises_nothing():
    """The check is on the result: a NaN in keys that no row sees (outside every row's
    window, in tiles the kernel skips) changes nothing, so nothing is refused."""
    q, k, v = qkv(1, 4, 2, 1, 900, 16, seed=1)
    O_ref, lse_ref = attention_reference(q, k, v, window=100)
    k[:, :, :500] = np.nan
    v[:, :, :500] = np.nan
    out, lse = streaming_attention(q, k, v, window=100, return_lse=True)
    assert rel_err(out, O_ref) <= RTOL and rel_err(lse, lse_ref) <= RTOL


def test_huge_finite_inputs_are_not_blamed():
    """Finite inputs whose scores overflow float32 give NaN as before, with no error that
    would wrongly name an input (the scan finds every input finite)."""
    q, k, v = qkv(1, 1, 1, 4, 6, 8, seed=2)
    q *= np.float32(1e30)
    k *= np.float32(1e30)
    out = streaming_attention(q, k, v)
    assert not np.isfinite(out).all()
