"""The split-KV lab: any bounds, any merge order (a fold or any tree of pairs) give the float64
oracle's O and LSE; the kernel's own chunks give the decode kernel's output to float32 rounding; an
empty chunk is the identity; merge weights sum to 1 and recombine the chunks' outputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attnviz import splitkv
from attnviz.reference import attention_reference
from kernels import decode_block, streaming_attention
from kernels.tuning import active as active_tuning
from tests.helpers import rel_err

RTOL = 1e-5


def _inputs(g, Lk, D, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((g, D)).astype(np.float32)
    k = rng.standard_normal((Lk, D)).astype(np.float32)
    v = rng.standard_normal((Lk, D)).astype(np.float32)
    return q, k, v


def _oracle(q, k, v, **mask):
    O, lse = attention_reference(q[:, None], k, v, **mask)  # q as g rows of one query each
    return O[:, 0], lse[:, 0]


@st.composite
def problems(draw):
    g = draw(st.sampled_from([1, 2, 4, 8]))
    Lk = draw(st.integers(1, 300))
    D = draw(st.sampled_from([4, 16, 64]))
    cuts = draw(st.lists(st.integers(0, Lk), max_size=7))
    bounds = [0, *sorted(cuts), Lk]  # repeated cuts give chunks with no key at all
    mask = draw(st.sampled_from(["causal", "window", "none", "offset"]))
    kw = {"none": {"causal": False}, "causal": {}}.get(mask)
    if mask == "window":
        kw = {"window": draw(st.integers(1, Lk))}
    elif mask == "offset":
        kw = {"q_offset": draw(st.integers(0, Lk - 1))}
    order = draw(st.permutations(range(len(bounds) - 1)))
    return g, Lk, D, bounds, kw, order, draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(problems())
def test_any_bounds_any_order_is_exact(p):
    g, Lk, D, bounds, mask, order, seed = p
    q, k, v = _inputs(g, Lk, D, seed)
    states = splitkv.partials(q, k, v, bounds=bounds, **mask)
    assert len(states) == len(bounds) - 1
    O, lse = splitkv.merge(states, order)
    O_ref, lse_ref = _oracle(q, k, v, **mask)
    assert rel_err(O, O_ref) <= RTOL and rel_err(lse, lse_ref) <= RTOL
    # each chunk alone is the oracle on its keys with the others masked out
    for s, (a, b) in zip(states, zip(bounds[:-1], bounds[1:], strict=True), strict=True):
        assert s.keys == ((a, b),)
        O_c, lse_c = s.finalized()
        if a == b:
            assert s.empty
            continue
        vis_ref = _oracle(q, k[a:b], v[a:b], causal=mask.get("causal", True),
                          q_offset=mask.get("q_offset", Lk - 1) - a if mask.get("causal", True)
                          else None, window=mask.get("window"))
        assert rel_err(lse_c, vis_ref[1]) <= RTOL and rel_err(O_c, vis_ref[0]) <= RTOL


@settings(max_examples=30, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_any_tree_of_pairwise_merges_is_exact(p, rnd):
    """The learner's way: pick any two current states, merge them, until one is left."""
    g, Lk, D, bounds, mask, _, seed = p
    q, k, v = _inputs(g, Lk, D, seed)
    pool = splitkv.partials(q, k, v, bounds=bounds, **mask)
    while len(pool) > 1:
        a, b = rnd.sample(range(len(pool)), 2)
        merged = splitkv.merge_pair(pool[a], pool[b])
        pool = [s for i, s in enumerate(pool) if i not in (a, b)] + [merged]
    assert sorted(pool[0].chunks) == list(range(len(bounds) - 1))
    O, lse = pool[0].finalized()
    O_ref, lse_ref = _oracle(q, k, v, **mask)
    assert rel_err(O, O_ref) <= RTOL and rel_err(lse, lse_ref) <= RTOL


@pytest.mark.parametrize("Lk,window", [(1, None), (700, None), (3000, None), (5003, None),
                                       (5003, 1500), (2500, 64)])
@pytest.mark.parametrize("g", [1, 4])
def test_the_kernels_chunks_give_the_decode_kernels_output(Lk, window, g):
    D = 64
    q, k, v = _inputs(g, Lk, D, Lk + g)
    bounds = splitkv.kernel_bounds(Lk, D, window=window)
    Bc = decode_block(D)  # the decode kernel's KV block (tuned per host, or built-in)
    assert bounds[0] == 0 and bounds[-1] == Lk
    assert all(b % Bc == 0 for b in bounds[1:-1])  # the kernel's tile grid
    states = splitkv.partials(q, k, v, bounds=bounds, window=window)
    if window and Lk - window >= Bc:  # the keys before the window's first tile: one empty chunk
        assert states[0].empty and not any(s.empty for s in states[1:])
    first = 1 if states[0].empty and len(states) > 1 else 0
    O, lse = splitkv.merge(states, [*range(len(states))][first:] + [0] * (first == 1))
    O_k, lse_k = streaming_attention(q[None, :, None], k[None, None], v[None, None],
                                     window=window, return_lse=True)
    # the kernel merges its chunks 0, 1, 2, ... in that order; so did we (plus an identity).
    # Same tiles, same cut, same order, yet not bit for bit: under fastmath LLVM vectorizes
    # the row sums of each compiled caller its own way, and which callers a process compiled
    # first decides which code runs (CI saw 1-ulp differences after the trace tests ran).
    np.testing.assert_allclose(O, O_k[0, :, 0], rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(lse, lse_k[0, :, 0], rtol=2e-6, atol=0)


def test_the_kernel_splits_long_caches_into_several_chunks():
    chunk = active_tuning().decode_min_chunk  # measured per host, or built-in (512)
    b = splitkv.kernel_bounds(8 * chunk, 64)
    assert len(b) - 1 >= 2  # >= 2 tasks per thread, 8 chunks' worth of keys: several chunks
    assert splitkv.kernel_bounds(min(100, chunk - 1), 64) == [0, min(100, chunk - 1)]


@pytest.mark.nojit
def test_merge_weights_sum_to_one_and_recombine_the_chunk_outputs():
    q, k, v = _inputs(4, 1000, 32, 3)
    states = splitkv.partials(q, k, v, bounds=[0, 10, 10, 400, 999, 1000], window=700)
    O, lse = splitkv.merge(states, [4, 1, 0, 3, 2])
    w = splitkv.merge_weights(states, lse.astype(np.float64))
    np.testing.assert_allclose(w.sum(axis=0), 1.0, rtol=1e-5)
    assert (w[:2] == 0).all()  # keys 0..9 are outside the window; chunk 1 holds no key
    O_mix = sum(w[c][:, None] * s.finalized()[0] for c, s in enumerate(states))
    np.testing.assert_allclose(O_mix, O, atol=1e-5)


@pytest.mark.nojit
def test_an_empty_chunk_is_the_identity_of_the_merge():
    q, k, v = _inputs(2, 50, 16, 4)
    states = splitkv.partials(q, k, v, bounds=[0, 20, 50], q_offset=10)  # keys > 10 unseen
    assert states[1].empty and np.all(states[1].m == -np.inf) and np.all(states[1].acc == 0)
    assert np.all(states[1].lse == -np.inf)
    for a, b in ((0, 1), (1, 0)):
        m = splitkv.merge_pair(states[a], states[b])
        np.testing.assert_array_equal(m.m, states[0].m)
        np.testing.assert_array_equal(m.l, states[0].l)
        np.testing.assert_array_equal(m.acc, states[0].acc)


@pytest.mark.nojit
def test_bad_arguments_get_clear_errors():
    q, k, v = _inputs(2, 10, 8, 0)
    with pytest.raises(ValueError, match=r"bounds must start at 0 and end at Lk=10"):
        splitkv.partials(q, k, v, bounds=[0, 5, 9])
    with pytest.raises(ValueError, match="non-decreasing"):
        splitkv.partials(q, k, v, bounds=[0, 6, 5, 10])
    with pytest.raises(ValueError, match="bounds must be integers"):
        splitkv.partials(q, k, v, bounds=[0.0, 10.0])
    with pytest.raises(ValueError, match=r"q_offset=10 is out of range"):
        splitkv.partials(q, k, v, bounds=[0, 10], q_offset=10)
    with pytest.raises(ValueError, match=r"q must be \[g, D\]"):
        splitkv.partials(q[None], k, v, bounds=[0, 10])
    with pytest.raises(TypeError, match="q has dtype int64"):
        splitkv.partials(q.astype(np.int64), k, v, bounds=[0, 10])
    states = splitkv.partials(q, k, v, bounds=[0, 5, 10])
    with pytest.raises(ValueError, match="every chunk 0..1 exactly once"):
        splitkv.merge(states, [0, 0])
    with pytest.raises(ValueError, match=r"chunk\(s\) \[0\] are in both states"):
        splitkv.merge_pair(states[0], states[0])
