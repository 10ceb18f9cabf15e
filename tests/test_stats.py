"""The numbers the panels quote (work, FLOPs, error, oracle), the trace exports, and the live
timing helpers on tiny problems."""
import csv
import io
import json
import math

import numpy as np
import pytest

from attnviz import export, run_trace, timing
from attnviz.masks import visible_mask
from attnviz.reference import attention_reference
from attnviz.scenarios import one_head
from attnviz.stats import (
    attention_flops,
    finished_rows,
    oracle,
    output_error,
    tile_work,
    visible_pairs,
)


@pytest.mark.parametrize("Lq,Lk,causal,q_offset,window", [
    (64, 64, True, None, None), (17, 50, True, None, None), (17, 50, True, 0, None),
    (40, 40, True, None, 7), (30, 90, True, -5, 12), (9, 13, False, None, None),
])
def test_visible_pairs_counts_the_mask(Lq, Lk, causal, q_offset, window):
    off = (Lk - Lq) if q_offset is None else q_offset
    vis = visible_mask(Lq, Lk, causal=causal, q_offset=off, window=window or 0)
    assert visible_pairs(Lq, Lk, causal=causal, q_offset=q_offset, window=window) == vis.sum()


def test_attention_flops():
    assert attention_flops(10, 64, B=2, H=3) == 4 * 64 * 10 * 6


def test_tile_work_counts_area_saved_and_masked():
    q, k, v = one_head("random", 64, 64, 8)
    trace = run_trace(q, k, v, q_block=16, kv_block=16)
    w = tile_work(trace)
    assert (w.full, w.partial, w.skipped) == (6, 4, 6)
    assert w.saved_fraction == pytest.approx(6 / 16)
    assert w.visible == 64 * 65 // 2
    assert w.wasted_fraction == pytest.approx(1 - w.visible / (10 * 256))


def test_oracle_in_row_chunks_equals_the_whole_oracle():
    q, k, v = one_head("random", 70, 100, 8)
    trace = run_trace(q, k, v, window=30, q_block=16, kv_block=16)
    O, lse = oracle(trace, chunk=16)
    O_all, lse_all = attention_reference(q, k, v, causal=True, window=30)
    np.testing.assert_allclose(O, O_all, atol=1e-12)
    np.testing.assert_allclose(lse, lse_all, atol=1e-12)


def test_output_error_only_for_finished_rows_and_zero_for_rows_that_see_nothing():
    q, k, v = one_head("random", 32, 32, 8)
    trace = run_trace(q, k, v, q_offset=-4, q_block=16, kv_block=16)
    O, lse = oracle(trace)
    done, err_o, err_l = output_error(trace, O, lse, trace.block_done_after[0])
    np.testing.assert_array_equal(done, np.arange(32) < 16)
    assert np.isnan(err_o[16:]).all() and (err_o[:16] < 1e-5).all()
    assert (err_l[:4] == 0).all()  # rows before position 0: LSE = -inf on both sides
    assert finished_rows(trace, len(trace.steps) - 1).all()


def test_trace_json_and_csv_hold_every_step_and_row():
    q, k, v = one_head("random", 20, 20, 4)
    trace = run_trace(q, k, v, q_offset=-2, q_block=8, kv_block=8)
    data = json.loads(export.trace_json(trace, {"who": "test"}))
    assert data["meta"] == {"who": "test"} and len(data["steps"]) == len(trace.steps)
    first = data["steps"][0]
    assert first["m_before"][0] == "-inf"  # JSON has no infinity
    assert first["l"] == pytest.approx(trace.steps[0].l.tolist())
    assert data["tile_status"] == trace.tile_status.tolist()
    lines = list(csv.DictReader(io.StringIO(export.trace_csv(trace))))
    assert len(lines) == sum(len(s.m) for s in trace.steps)
    last = trace.steps[-1]
    row = lines[-1]
    assert (int(row["n"]), int(row["i"]), int(row["j"])) == (last.n, last.i, last.j)
    assert float(row["l"]) == last.l[-1] and math.isinf(float(lines[0]["m_before"]))


def test_budget_refuses_what_would_take_too_long_or_too_much_memory():
    assert timing.budget_refusal(timing.Problem(1, 8, 8, 1024, 1024, 64)) is None
    assert "GFLOP" in timing.budget_refusal(timing.Problem(1, 8, 8, 8192, 8192, 128))
    # a decode over the budget: its inputs in GiB, its tiny S in its own unit (not "0.00 GiB")
    assert timing.budget_refusal(timing.Problem(16, 64, 64, 1, 2**16, 128)) == (
        "inputs and output need 64 GiB (> 1 GiB budget); standard's score matrix S alone "
        "would need 256 MiB")
    assert timing.standard_max_bytes(2**40) == timing.STANDARD_MAX_BYTES_CAP
    assert timing.standard_max_bytes(2**30) == 2**28


def test_compare_times_both_kernels_and_they_agree():
    p = timing.Problem(1, 2, 1, 96, 96, 16, Br=32, Bc=32)
    q, k, v = timing.inputs_for(p, "random", 0)
    res = timing.compare(p, q, k, v, repeats=3, ram=2**34, target_s=0.01)
    for m in ("standard", "streaming"):
        run = res[m]
        assert run.skipped is None and len(run.times) >= 3
        assert run.median_s == pytest.approx(np.median(run.times))
        assert run.gflops == pytest.approx(p.flops / run.median_s / 1e9)
    assert res["max_abs_diff"] < 1e-5
    assert res["flops"] == 4 * 16 * 2 * (96 * 97 // 2)


def test_compare_reports_the_standard_memory_guard_as_skipped():
    p = timing.Problem(1, 2, 2, 64, 64, 8)
    q, k, v = timing.inputs_for(p, "random", 0)
    # guard: 4 KiB < S (32 KiB)
    res = timing.compare(p, q, k, v, repeats=1, ram=4 * 4096, target_s=0.01)
    assert res["standard"].skipped.startswith("memory guard")
    assert res["standard"].skip_kind == "memory"
    assert res["streaming"].median_s > 0 and res["max_abs_diff"] is None


def test_sweeps_yield_one_row_per_length_and_one_run_per_block_pair():
    rows = list(timing.sweep_lengths(lambda L: timing.Problem(1, 1, 1, L, L, 8), [32, 64],
                                     scenario="random", seed=0, repeats=1, ram=2**34,
                                     target_s=0.01))
    assert [r["L"] for r in rows] == [32, 64]
    assert all(r["standard_s"] and r["streaming_s"] for r in rows)
    p = timing.Problem(1, 1, 1, 48, 48, 8)
    q, k, v = timing.inputs_for(p, "random", 0)
    got = list(timing.sweep_blocks(p, q, k, v, [8, 16], [16, 32], repeats=1, target_s=0.01))
    assert [(a, b) for a, b, _ in got] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(r.gflops > 0 for *_, r in got)
    assert set(timing.machine()) == {"threads", "threading layer", "blas", "dtype"}
