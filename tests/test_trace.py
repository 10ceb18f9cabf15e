"""The traced driver: the same arithmetic as the kernel, and the invariants a learner sees."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnviz import run_trace
from attnviz.masks import visible_mask
from kernels import decode_split, streaming_attention
from tests.helpers import assert_matches_oracle, qkv

ROOT = Path(__file__).resolve().parent.parent

CASES = [
    # Lq, Lk, D, Br, Bc, mask
    (100, 100, 64, 32, 64, {}),
    (37, 53, 16, 8, 5, {}),
    (50, 30, 16, 16, 16, {}),  # rows before position 0
    (64, 200, 16, 16, 32, {"q_offset": 0}),
    (90, 90, 16, 16, 8, {"window": 20}),
    (33, 47, 16, 8, 16, {"causal": False}),
    (1, 500, 64, 32, 64, {}),  # decode: one row, the sequential order
]


def _trace(Lq, Lk, D, Br, Bc, mask, seed=0):
    q, k, v = qkv(1, 1, 1, Lq, Lk, D, seed=seed)
    return q, k, v, run_trace(q[0, 0], k[0, 0], v[0, 0], q_block=Br, kv_block=Bc, **mask)


@pytest.mark.nojit
@pytest.mark.parametrize("Lq,Lk,D,Br,Bc,mask", CASES[:3])
def test_trace_matches_oracle_nojit(Lq, Lk, D, Br, Bc, mask):
    q, k, v, tr = _trace(Lq, Lk, D, Br, Bc, mask)
    assert_matches_oracle(tr.out, tr.lse, q[0, 0], k[0, 0], v[0, 0], **mask)


@pytest.mark.parametrize("Lq,Lk,D,Br,Bc,mask", CASES)
def test_trace_equals_kernel_and_oracle(Lq, Lk, D, Br, Bc, mask):
    q, k, v, tr = _trace(Lq, Lk, D, Br, Bc, mask)
    assert_matches_oracle(tr.out, tr.lse, q[0, 0], k[0, 0], v[0, 0], **mask)
    out, lse = streaming_attention(q, k, v, q_block=Br, kv_block=Bc, return_lse=True, **mask)
    if Lq > 1:
        # prefill: the same tile_update calls in the same order. LLVM may vectorize a row sum
        # or fuse a multiply-add differently where the routine is inlined (fastmath), so the
        # two agree to float32 rounding (a few ulp), not necessarily to the bit.
        np.testing.assert_allclose(tr.out, out[0, 0], rtol=2e-6, atol=2e-7)
        np.testing.assert_allclose(tr.lse, lse[0, 0], rtol=2e-6, atol=2e-7)


DECODE_CASES = [
    # Lk, D, Bc, mask
    (500, 64, 64, {}),
    (333, 40, 48, {"window": 100}),
    (257, 128, 32, {"causal": False}),
    (130, 16, 256, {"q_offset": 90}),  # one ragged tile; keys after the query masked
]
PAIRS = [(False, False), (True, False), (False, True), (True, True)]


def _decode_trace_and_kernel(Lk, D, Bc, mask):
    """The traced row and the decode kernel's, with one chunk (nothing to merge)."""
    q, k, v = qkv(1, 1, 1, 1, Lk, D, seed=Lk)
    tr = run_trace(q[0, 0], k[0, 0], v[0, 0], q_block=1, kv_block=Bc, **mask)
    assert decode_split(1, 1, Lk, Bc, q_offset=mask.get("q_offset", Lk - 1),
                        causal=mask.get("causal", True), window=mask.get("window", 0))[1] == 1
    out, lse = streaming_attention(q, k, v, kv_block=Bc, return_lse=True, **mask)
    return q, k, v, tr, out[0, 0], lse[0, 0]


@pytest.mark.parametrize("Lk,D,Bc,mask", DECODE_CASES)
def test_decode_trace_uses_the_decode_kernels_products(decode_loops, Lk, D, Bc, mask):
    """In decode the stepper takes the decode kernel's products (S and P~V each as loops or
    BLAS, tuned per host), not a choice of its own. In one process the two agree to float32
    rounding only, which BLAS and loops also do: that they are the same arithmetic, bit for
    bit, is test_decode_trace_is_the_kernel_bit_for_bit's to show."""
    q, k, v, tr, out, lse = _decode_trace_and_kernel(Lk, D, Bc, mask)
    assert tr.config.loops == decode_loops
    # in one process, to float32 rounding: see test_decode_trace_is_the_kernel_bit_for_bit
    np.testing.assert_allclose(tr.out, out, rtol=2e-6, atol=2e-7)
    np.testing.assert_allclose(tr.lse, lse, rtol=2e-6, atol=2e-7)
    assert_matches_oracle(tr.out, tr.lse, q[0, 0], k[0, 0], v[0, 0], **mask)


_BITS = """
import json
import numpy as np
from kernels import tuning
from tests.helpers import forced_tuning
from tests.test_trace import DECODE_CASES, PAIRS, _decode_trace_and_kernel
bad = []
for pair in PAIRS:
    forced = forced_tuning(pair)
    tuning.active = lambda: forced
    for case in DECODE_CASES:
        *_, tr, out, lse = _decode_trace_and_kernel(*case)
        if not (np.array_equal(tr.out, out) and np.array_equal(tr.lse, lse)):
            bad.append([pair, case[:3], float(np.abs(tr.out - out).max())])
print(json.dumps(bad))
"""


def test_decode_trace_is_the_kernel_bit_for_bit():
    """In a fresh process, the traced decode row is the kernel's bit for bit, for each of the
    four product choices. (Numba links one compiled copy of each routine per process, and
    with fastmath's reassociation a copy compiled in another context, say by a lab that
    calls ``attend_span`` directly, may round the last bit differently: hence the fresh
    process, and the tolerance of the in-process tests.)"""
    done = subprocess.run([sys.executable, "-c", _BITS], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("Lq,Lk,D,Br,Bc,mask", CASES)
def test_tile_status_is_what_the_mask_implies(Lq, Lk, D, Br, Bc, mask):
    _, _, _, tr = _trace(Lq, Lk, D, Br, Bc, mask)
    c = tr.config
    vis = visible_mask(Lq, Lk, causal=c.mask.causal, q_offset=c.mask.q_offset,
                       window=c.mask.window)
    for i in range(c.Tr):
        for j in range(c.Tc):
            (i0, i1), (k0, k1) = c.rows(i), c.keys(j)
            block = vis[i0:i1, k0:k1]
            expect = "skipped" if not block.any() else "full" if block.all() else "partial"
            assert tr.tile_status[i, j] == expect, (i, j)


def _check_invariants(tr):
    c = tr.config
    visited = [(s.i, s.j) for s in tr.steps]
    # steps: Q block outer, KV block inner, exactly the non-skipped tiles
    assert visited == sorted(visited)
    assert set(visited) == {tuple(ij) for ij in np.argwhere(tr.tile_status != "skipped")}
    assert all(tr.tile_status[s.i, s.j] == s.kind for s in tr.steps)
    assert [s.n for s in tr.steps] == list(range(len(tr.steps)))
    for i in range(c.Tr):
        steps = [s for s in tr.steps if s.i == i]
        for prev, s in zip(steps, steps[1:], strict=False):
            np.testing.assert_array_equal(s.m_before, prev.m)
            np.testing.assert_array_equal(s.l_before, prev.l)
        for s in steps:
            assert np.all(s.m >= s.m_before)  # the running max never decreases
            moved = s.m != s.m_before
            assert np.all(s.alpha[~moved] == 1.0)  # alpha == 1 exactly when the max stayed
            assert np.all(s.alpha[moved] < 1.0)
            # l' = alpha l + rowsum(P~), the identity the live-math panel shows
            np.testing.assert_allclose(s.l, s.alpha * s.l_before + s.p_sum, rtol=1e-6)


@pytest.mark.parametrize("Lq,Lk,D,Br,Bc,mask", CASES)
def test_trace_invariants(Lq, Lk, D, Br, Bc, mask):
    _check_invariants(_trace(Lq, Lk, D, Br, Bc, mask)[3])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    Lq=st.integers(1, 70), Lk=st.integers(1, 70), D=st.sampled_from([4, 16]),
    Br=st.integers(1, 33), Bc=st.integers(1, 33),
    kind=st.sampled_from(["causal", "window", "full"]),
    offset=st.floats(0, 1), window=st.integers(1, 40), seed=st.integers(0, 2**16),
)
def test_property_trace_kernel_oracle(Lq, Lk, D, Br, Bc, kind, offset, window, seed):
    """Any shape, any blocks, any legal mask: trace == kernel == oracle; invariants hold."""
    mask = {"causal": kind != "full"}
    if kind != "full":
        lo, hi = 1 - Lq, Lk - 1
        mask["q_offset"] = int(round(lo + offset * (hi - lo)))
    if kind == "window":
        mask["window"] = window
    q, k, v = qkv(1, 2, 1, Lq, Lk, D, seed=seed)
    out, lse = streaming_attention(q, k, v, q_block=Br, kv_block=Bc, return_lse=True, **mask)
    assert_matches_oracle(out, lse, q, k, v, **mask)
    tr = run_trace(q[0, 1], k[0, 0], v[0, 0], q_block=Br, kv_block=Bc, **mask)
    assert_matches_oracle(tr.out, tr.lse, q[0, 1], k[0, 0], v[0, 0], **mask)
    _check_invariants(tr)


def test_tiles_replay_the_step():
    """S and P~ recomputed for a step agree with its recorded row max / row sum."""
    _, _, _, tr = _trace(90, 90, 16, 16, 8, {"window": 20})
    for step in tr.steps:
        S, P = tr.tiles(step.n)
        np.testing.assert_array_equal(S.max(axis=1), step.s_max)
        np.testing.assert_allclose(P.sum(axis=1), step.p_sum, rtol=1e-6)
        assert np.isinf(S).any() == (step.kind == "partial")
        m_ref = np.where(np.isfinite(step.m), step.m, 0)
        np.testing.assert_allclose(P, np.exp(S.astype(np.float64) - m_ref[:, None]), rtol=1e-5, atol=1e-30)


def test_hooks_see_every_event_in_order():
    events = []

    class Recorder:
        def on_skip(self, i, j):
            events.append(("skip", i, j))

        def on_step(self, step):
            events.append(("step", step.i, step.j))

        def on_block_done(self, i, O_rows, lse_rows):
            events.append(("done", i, O_rows.shape[0]))

    q, k, v = qkv(1, 1, 1, 40, 40, 16)
    tr = run_trace(q[0, 0], k[0, 0], v[0, 0], q_block=16, kv_block=16, hooks=[Recorder()])
    c = tr.config
    expect = []
    for i in range(c.Tr):
        for j in range(c.Tc):
            expect.append(("skip" if tr.tile_status[i, j] == "skipped" else "step", i, j))
        expect.append(("done", i, c.rows(i)[1] - c.rows(i)[0]))
    assert events == expect


def test_trace_stays_small_at_4096():
    q, k, v = qkv(1, 1, 1, 4096, 4096, 64, seed=1)
    tr = run_trace(q[0, 0], k[0, 0], v[0, 0])
    per_row = sum(a.nbytes for s in tr.steps
                  for a in (s.m_before, s.m, s.l_before, s.l, s.alpha, s.s_max, s.p_sum, s.acc_norm))
    # Q block i (rows 32i .. 32i+31) needs KV tiles 0 .. (32i+31)//64: 4160 of 128x64
    assert len(tr.steps) == sum((32 * i + 31) // 64 + 1 for i in range(128)) == 4160
    assert per_row < 5 * 2**20  # ~4.3 MB for 4160 steps of 32 rows
    assert tr.counts == {"full": 4032, "partial": 128, "skipped": 4032}


@pytest.mark.parametrize("loops", [(1, 0), (True,), "loops", [True, False]])
def test_trace_rejects_products_that_are_not_a_pair_of_bools(loops):
    q, k, v = qkv(1, 1, 1, 1, 20, 8)
    with pytest.raises(ValueError, match="pair of bools"):
        run_trace(q[0, 0], k[0, 0], v[0, 0], loops=loops)
