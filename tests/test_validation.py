"""Bad input: every error names the argument and what is allowed."""
from __future__ import annotations

import numpy as np
import pytest

from attnviz import run_trace
from kernels import standard_attention, streaming_attention
from tests.helpers import qkv

KERNELS = [streaming_attention, standard_attention]


@pytest.mark.nojit
@pytest.mark.parametrize("fn", KERNELS)
def test_wrong_ndim(fn):
    q, k, v = qkv(1, 2, 1, 4, 4, 8)
    with pytest.raises(ValueError, match=r"q must have 4 dimensions \[B, H, L, D\], got shape \(2, 4, 8\)"):
        fn(q[0], k, v)


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize("bad,match", [
    ("B", r"batch B differs: q has 2, k has 1"),
    ("D", r"head dim D differs: q has 8, k has 4"),
    ("Lk", r"k and v must have the same shape"),
    ("H", r"Hq=3 must be a multiple of KV heads Hkv=2"),
])
def test_mismatched_shapes(fn, bad, match):
    q, k, v = qkv(1, 2, 1, 4, 4, 8)
    if bad == "B":
        q = np.concatenate([q, q])
    elif bad == "D":
        k, v = k[..., :4], v[..., :4]
    elif bad == "Lk":
        v = v[:, :, :3]
    elif bad == "H":
        q, k, v = qkv(1, 3, 2, 4, 4, 8)
    with pytest.raises(ValueError, match=match):
        fn(q, k, v)


@pytest.mark.parametrize("kw,match", [
    ({"q_block": 0}, r"q_block must be a positive integer, got 0"),
    ({"kv_block": -3}, r"kv_block must be a positive integer, got -3"),
    ({"kv_block": 2.5}, r"kv_block must be a positive integer, got 2.5"),
])
def test_block_sizes(kw, match):
    q, k, v = qkv(1, 1, 1, 4, 4, 8)
    with pytest.raises(ValueError, match=match):
        streaming_attention(q, k, v, **kw)


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize("kw,exc,match", [
    ({"q_offset": 10}, ValueError, r"q_offset=10 is out of range: with Lq=4 and Lk=6 it must lie in \[-3, 5\]"),
    ({"q_offset": -4}, ValueError, r"must lie in \[-3, 5\]"),
    ({"q_offset": 1.5}, TypeError, r"q_offset must be an integer"),
    ({"q_offset": 1, "causal": False}, ValueError, r"q_offset only applies with causal=True"),
    ({"window": 0}, ValueError, r"window must be >= 1"),
    ({"window": 3, "causal": False}, ValueError, r"window requires causal=True"),
    ({"scale": -1.0}, ValueError, r"scale must be a positive finite number"),
    ({"causal": "yes"}, TypeError, r"causal must be True or False"),
])
def test_mask_arguments(fn, kw, exc, match):
    q, k, v = qkv(1, 1, 1, 4, 6, 8)
    with pytest.raises(exc, match=match):
        fn(q, k, v, **kw)


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(fn, bad):
    q, k, v = qkv(1, 1, 1, 4, 6, 8)
    k[0, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=r"k contains NaN or Inf"):
        fn(q, k, v)


@pytest.mark.parametrize("fn", KERNELS)
@pytest.mark.parametrize("dtype", [np.int32, np.complex64, object, bool])
def test_non_float_dtypes(fn, dtype):
    q, k, v = qkv(1, 1, 1, 4, 6, 8)
    with pytest.raises(TypeError, match=r"v has dtype .*; allowed dtypes are float16, float32 and float64"):
        fn(q, k, v.astype(dtype))


@pytest.mark.parametrize("fn", KERNELS)
def test_no_keys(fn):
    q, k, v = qkv(1, 1, 1, 4, 0, 8)
    with pytest.raises(ValueError, match=r"Lk == 0"):
        fn(q, k, v)


def test_standard_memory_guard_names_the_bytes():
    q, k, v = qkv(1, 2, 1, 64, 64, 8)
    with pytest.raises(MemoryError, match=r"\[1, 2, 64, 64\] float32 score matrix of 0.00 GiB, above the limit"):
        standard_attention(q, k, v, max_bytes=1000)
    standard_attention(q, k, v, max_bytes=2 * 64 * 64 * 4)  # exactly enough: runs


def test_trace_validates_like_the_kernel():
    q, k, v = qkv(1, 1, 1, 4, 6, 8)
    with pytest.raises(ValueError, match=r"q must have 2 dimensions \[L, D\]"):
        run_trace(q, k[0, 0], v[0, 0])
    with pytest.raises(ValueError, match=r"q_block must be a positive integer"):
        run_trace(q[0, 0], k[0, 0], v[0, 0], q_block=0)
    with pytest.raises(ValueError, match=r"window requires causal=True"):
        run_trace(q[0, 0], k[0, 0], v[0, 0], causal=False, window=2)
