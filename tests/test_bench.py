"""The benchmark CLI (``python -m attnviz.bench``): what it counts, what it refuses to time, and
what it writes. Tiny shapes only; nothing here asserts a timing."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from attnviz.bench import cases as C
from attnviz.bench.contenders import (
    NUMBA_STREAMING,
    NUMPY,
    Contender,
    default_contenders,
    numpy_standard_attention,
    torch_available,
    torch_mask,
)
from attnviz.bench.machine import ReadProbe, machine_info, read_bandwidth
from attnviz.bench.measure import Settings, oracle_samples, run_case, time_round_robin
from attnviz.bench.report import SCHEMA, format_markdown, format_sweep, format_text, metrics
from attnviz.bench.sweep import sweep_blocks
from attnviz.masks import visible_mask
from attnviz.reference import attention_reference
from tests.helpers import qkv, rel_err

ROOT = Path(__file__).resolve().parents[1]
FAST = Settings(repeats=3, min_repeats=2, budget_s=0.2, min_sample_s=0.0, settle_s=0.0,
                memory=False, roof_probes=False)


# --- counting ------------------------------------------------------------------------------------

def test_visible_pairs_match_a_dense_mask_on_ragged_shapes_and_windows():
    """The closed-form span count equals counting True in visible_mask, everywhere."""
    checked = 0
    for Lq, Lk in [(1, 1), (1, 37), (5, 5), (7, 19), (19, 7), (33, 100), (64, 64)]:
        offsets = sorted({Lk - Lq, 0, 1 - Lq, Lk - 1, (Lk - Lq) // 2})
        for q_offset in [o for o in offsets if 1 - Lq <= o <= Lk - 1]:
            for window in (0, 1, 3, 8, 1000):
                dense = visible_mask(Lq, Lk, causal=True, q_offset=q_offset, window=window)
                got = C.visible_pairs(Lq, Lk, causal=True, q_offset=q_offset, window=window)
                assert got == int(dense.sum()), (Lq, Lk, q_offset, window)
                checked += 1
        assert C.visible_pairs(Lq, Lk, causal=False, q_offset=0) == Lq * Lk
    assert checked > 100


def test_flops_are_4D_per_visible_pair_for_every_head():
    case = C.Case("custom", B=2, Hq=6, Hkv=3, Lq=50, Lk=80, D=24, window=17)
    dense = visible_mask(50, 80, causal=True, q_offset=30, window=17)
    assert C.attention_flops(case) == 4 * 24 * 2 * 6 * int(dense.sum())
    # the issue's headline: causal L=4096, H=8, D=128 is about 2 B H L^2 D
    L, D, H = 4096, 128, 8
    flops = C.attention_flops(C.prefill(L, D, H))
    assert flops == 4 * D * H * L * (L + 1) // 2
    assert math.isclose(flops, 2 * H * L**2 * D, rel_tol=1e-3)


def test_kv_read_bytes_count_each_visible_key_once_per_kv_head():
    assert C.kv_read_bytes(C.decode(8192)) == 2 * 4 * 8 * 8192 * 128  # Hkv=8, all keys
    windowed = replace(C.decode(8192), window=1000)
    assert C.kv_read_bytes(windowed) == 2 * 4 * 8 * 1000 * 128


def test_parse_case():
    assert C.parse_case("prefill:L=512,D=64,H=4") == C.prefill(512, 64, 4)
    assert C.parse_case("decode:L=4096") == C.decode(4096)
    assert C.parse_case("chunk:Lq=64,Lk=1024,D=32,window=100") == replace(
        C.chunked(64, 1024, 32), window=100)
    assert C.parse_case("long") == C.long_context()
    for bad in ("train:L=4", "prefill:L", "decode:window=x", "decode:H=3"):
        with pytest.raises(ValueError):
            C.parse_case(bad)


def test_suites_have_the_issue_shapes():
    full = C.full_suite()
    prefill = {(c.Lq, c.D) for c in full if c.group == "prefill"}
    assert prefill == {(L, D) for L in (256, 1024, 4096, 8192) for D in (64, 128)}
    assert all(c.Hq == 8 and c.B == 1 and c.causal for c in full if c.group == "prefill")
    decode = [c for c in full if c.group == "decode"]
    assert {c.Lk for c in decode} == {1024, 8192, 32768}
    assert all((c.Hq, c.Hkv, c.D, c.Lq) == (32, 8, 128, 1) for c in decode)
    assert C.long_context() in full
    assert len({c.label for c in full}) == len(full)


# --- contenders ----------------------------------------------------------------------------------

@pytest.mark.parametrize("B,Hq,Hkv,Lq,Lk,D,mask", [
    (1, 4, 2, 13, 29, 8, {}),  # GQA, ragged, bottom-right causal
    (2, 3, 3, 9, 9, 16, {"window": 4}),
    (1, 2, 1, 5, 11, 8, {"causal": False}),
    (1, 2, 2, 6, 10, 8, {"q_offset": -3}),  # the first rows see no key: O = 0
])
def test_numpy_standard_matches_the_oracle(B, Hq, Hkv, Lq, Lk, D, mask):
    q, k, v = qkv(B, Hq, Hkv, Lq, Lk, D, seed=3)
    out = numpy_standard_attention(q, k, v, **mask)
    ref, _ = attention_reference(q, k, v, **mask)
    assert out.dtype == np.float32 and out.shape == (B, Hq, Lq, D)
    assert rel_err(out, ref) < 1e-5


def test_torch_mask_is_bottom_right():
    """is_causal (top-left) only where it equals the kernels' bottom-right mask."""
    assert torch_mask(C.prefill(64, 16)) == ("is_causal", None)
    assert torch_mask(C.decode(1024)) == ("none", None)  # one row at the end sees every key
    kind, mask = torch_mask(C.chunked(16, 64, 16))
    assert kind == "explicit"
    assert np.array_equal(mask, visible_mask(16, 64, causal=True, q_offset=48))
    kind, mask = torch_mask(replace(C.prefill(32, 16), window=5))
    assert kind == "explicit" and mask.sum() == C.visible_pairs(32, 32, causal=True,
                                                                 q_offset=0, window=5)


@pytest.mark.parametrize("case", [C.chunked(16, 80, 16, H=4), C.Case("decode", 1, 8, 2, 1, 300, 16),
                                  replace(C.prefill(40, 16, 2), window=7)],
                         ids=["chunk", "decode-gqa", "window"])
def test_every_contender_passes_the_gate_on_masks_torch_gets_wrong_by_default(case):
    """torch runs when installed (requirements-bench.txt); the others always."""
    contenders = default_contenders()
    results = run_case(case, contenders, FAST)
    assert [r.contender for r in results] == [c.name for c in contenders]
    for r in results:
        assert r.status == "ok", (r.contender, r.reason)
        assert r.oracle_err < 1e-5 and r.oracle_rows == "all"
        assert len(r.times_s) >= 2 and r.median_s > 0


# --- the gate refuses wrong kernels -------------------------------------------------------------

def _top_left(case, q, k, v):
    """A classic bug: causal aligned top-left (torch's is_causal) where Lq < Lk."""
    return lambda: numpy_standard_attention(q, k, v, causal=True, q_offset=0)


def _wrong_on_one_unsampled_head(case, q, k, v):
    from kernels import streaming_attention

    def call():
        out = streaming_attention(q, k, v)
        out[0, 1] *= 1.01  # head 1: not among the oracle's sampled heads (0, Hq/2, Hq-1)
        return out

    return call


def test_a_wrong_contender_gets_no_time():
    case = C.chunked(24, 96, 16, H=2)
    wrong = Contender("top_left", "top-left causal", _top_left, lambda c: None)
    results = run_case(case, [NUMPY, wrong, NUMBA_STREAMING], FAST)
    by = {r.contender: r for r in results}
    assert by["top_left"].status == "wrong" and "oracle" in by["top_left"].reason
    assert by["top_left"].times_s == [] and by["top_left"].median_s is None
    assert by["numpy"].status == by["numba_streaming"].status == "ok"
    rows = metrics(results, roof_gflops=50.0, bandwidth_gbps=10.0)
    wrong_row = next(r for r in rows if r["contender"] == "top_left")
    assert wrong_row["median_s"] is None and wrong_row["gflops"] is None
    text = format_text(rows)
    cells = next(x for x in text.splitlines() if "top-left causal" in x).split()
    i = cells.index("WRONG")
    assert cells[i + 1:i + 4] == ["-", "-", "-"]  # no rate, no roof fraction, no ratio
    assert "top-left causal: wrong" in text  # and the reason is printed


def test_rows_the_oracle_did_not_sample_are_cross_checked():
    case = C.prefill(1024, 16, H=8)  # 8 * 1024 * 1024 > 2**22: the oracle samples rows
    samples = oracle_samples(case, *C.make_inputs(case))
    assert 1 not in {s.h for s in samples} and all(s.r1 - s.r0 < 1024 for s in samples)
    wrong = Contender("subtle", "wrong on head 1", _wrong_on_one_unsampled_head, lambda c: None)
    results = run_case(case, [NUMBA_STREAMING, wrong], FAST)
    by = {r.contender: r for r in results}
    assert by["numba_streaming"].status == "ok" and by["numba_streaming"].oracle_rows == "sampled"
    assert by["subtle"].oracle_err < 1e-5  # it fooled the sample...
    assert by["subtle"].status == "wrong" and "numba_streaming" in by["subtle"].reason
    assert by["subtle"].times_s == []  # ...but not the full comparison


def test_refused_and_crashing_contenders_are_reported_not_timed():
    def refuse(case, q, k, v):
        def call():
            raise MemoryError("score matrix too big")
        return call

    def crash(case, q, k, v):
        return lambda: 1 / 0

    results = run_case(C.prefill(16, 8, 1), [Contender("r", "r", refuse, lambda c: None),
                                              Contender("c", "c", crash, lambda c: None)], FAST)
    assert [(r.status, r.times_s) for r in results] == [("refused", []), ("error", [])]
    assert "guard" in results[0].reason and "ZeroDivisionError" in results[1].reason


def test_standard_is_refused_by_its_guard_at_long_context():
    """L=32768: the Numba standard kernel's own guard refuses (no 32 GiB allocation)."""
    from attnviz.bench.contenders import NUMBA_STANDARD

    case = C.long_context()
    q = np.zeros((1, 8, case.Lq, 128), np.float32)
    with pytest.raises(MemoryError, match="GiB"):
        NUMBA_STANDARD.prepare(case, q, q, q)()
    assert "predicted memory" in NUMPY.skip_reason(case)


# --- timing --------------------------------------------------------------------------------------

def test_round_robin_rotates_the_order_every_round():
    log = []
    calls = {n: (lambda n=n: log.append(n)) for n in "abc"}
    out = time_round_robin(calls, repeats=3, min_sample_s=0.0, settle_s=0.0)
    assert log[:3] == ["a", "b", "c"]  # calibration, untimed
    assert log[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert all(len(times) == 3 and n == 1 for times, n in out.values())


def test_sweep_blocks_grid():
    case = C.prefill(48, 16, H=1)
    sweep = sweep_blocks(case, [8, 16], [8, 32], FAST)
    assert sweep.ms.shape == (2, 2) and np.isfinite(sweep.ms).all()
    assert sweep.best in {(a, b) for a in (8, 16) for b in (8, 32)}
    assert all(r.status == "ok" for r in sweep.results)
    d = json.loads(json.dumps(sweep.to_dict(), allow_nan=False))
    assert d["q_blocks"] == [8, 16] and len(d["ms"]) == 2
    text = "\n".join(format_sweep(sweep))
    assert "best" in text and "default" in text


# --- the CLI, end to end -------------------------------------------------------------------------

def test_cli_json_and_markdown(tmp_path):
    """The CLI in a subprocess on two tiny cases (no torch: its import alone takes seconds),
    with the peak-memory subprocesses. On SciPy's OpenBLAS, whose small GEMMs take no
    workspace, so the measured peak is the memory model's arrays alone (oneMKL's GEMMs add
    their own packing buffers, ~1.5 MiB measured here, which the model does not count)."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "attnviz.bench", "--case", "prefill:L=512,D=32,H=2",
           "--case", "decode:L=1024,Hq=4,Hkv=2,D=32",
           "--contenders", "numpy,numba_standard,numba_streaming", "--roof-n", "256",
           "--bandwidth-mib", "16", "--repeats", "3", "--budget", "0.3", "--settle", "0.01",
           "--json", str(out), "--markdown"]
    # ATTNVIZ_AUTOTUNE=off: a bench on a host with no stored tuning would first measure one
    # (~20 s, written to the user's cache); this test runs on the built-in choices
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(ROOT), "ATTNVIZ_BLAS": "openblas",
                                            "ATTNVIZ_AUTOTUNE": "off"})
    assert proc.returncode == 0, proc.stderr
    md = proc.stdout
    assert "Kernel choices: prefill blocks D=64: 128×128" in md  # the built-in ones, named
    assert "ATTNVIZ_AUTOTUNE=off" in md
    assert "## Machine" in md and "GEMM roof" in md and "Read bandwidth" in md
    assert "| shape | contender | time ms | GFLOP/s | % roof |" in md
    assert "| shape | contender | time ms | K/V GB/s | % bw |" in md
    assert "check_finite=False" in md and "float32" in md
    assert "[" in proc.stderr  # progress went to stderr

    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA
    m = data["machine"]
    for key in ("cpu", "logical_cores", "ram_bytes", "versions", "numba_threads",
                "numba_threading_layer", "blas", "dtype"):
        assert key in m
    assert m["versions"]["numpy"] and m["versions"]["numba"]
    assert m["kernel_blas"]["name"] == "openblas" and "ATTNVIZ_BLAS" in m["kernel_blas"]["reason"]
    assert data["roof"]["gflops"] > 0 and len(data["roof"]["runs_gflops"]) == 2
    assert data["bandwidth"]["gbps"] > 0 and data["cold_start"]["in_process_s"] > 0
    rows = data["results"]
    assert len(rows) == 2 * 3
    for r in rows:
        assert r["status"] == "ok", r
        assert r["median_s"] > 0 and len(r["times_s"]) >= 3
        assert r["flops"] == C.attention_flops(C.Case(**{k: v for k, v in r["case"].items()
                                                         if k != "label"}))
        assert r["gflops"] > 0 and r["roof_fraction"] > 0
        assert r["oracle_err"] < 1e-4
        assert r["measured_bytes"] is not None and "peak RSS" in r["memory_note"]
        assert r["predicted_bytes"] > 0
        assert r["vs_torch"] is None  # torch was not a contender
    big = next(r for r in rows if r["contender"] == "numba_standard" and r["case"]["Lq"] == 512)
    # S is 2 x 512 x 512 floats = 2 MiB. The kernel's RSS counters lag by up to 64 pages per
    # thread, so allow 10% + 512 KiB.
    assert abs(big["measured_bytes"] - big["predicted_bytes"]) < (
        0.1 * big["predicted_bytes"] + 2**19)


def test_markdown_without_sweeps_or_torch_renders():
    rows = metrics(run_case(C.prefill(32, 8, 1), [NUMPY], FAST), 10.0, 5.0)
    md = format_markdown(machine_info(), {"n": 8, "gflops": 1.0, "samples_s": [1.0]},
                         None, None, rows, [], "python -m attnviz.bench --x")
    assert "### prefill (B=1, H=1)" in md and "python -m attnviz.bench --x" in md


def test_the_roof_is_timed_in_the_same_rounds_as_the_case():
    settings = replace(FAST, roof_probes=True, roof_n=64)
    (pre,) = run_case(C.prefill(32, 8, 1), [NUMPY], settings)
    (dec,) = run_case(C.Case("decode", 1, 4, 2, 1, 256, 8), [NUMPY], settings)
    assert pre.roof_gflops > 0 and pre.bandwidth_gbps is None
    assert dec.bandwidth_gbps > 0 and dec.roof_gflops is None
    row = metrics([pre], roof_gflops=1e9, bandwidth_gbps=None)[0]
    assert row["roof_fraction"] == pytest.approx(pre.gflops / pre.roof_gflops)  # not 1e9
    assert "GEMM roof timed in the same rounds: L=32 D=8:" in format_text([row])


def test_the_read_probe_reads_the_arrays_it_is_given_with_the_fastest_reader():
    rng = np.random.default_rng(0)
    k, v = rng.standard_normal((2, 1, 2, 300, 8), dtype=np.float32)
    probe = ReadProbe(threads=2, torch=torch_available(), arrays=(k, v))
    try:
        assert probe.nbytes == k.nbytes + v.nbytes and probe.reader in ("np.max", "torch max")
        assert all(np.shares_memory(p, k) or np.shares_memory(p, v) for p in probe.parts)
        probe()
    finally:
        probe.close()
    fresh = read_bandwidth(2**20, threads=1, repeats=2)
    assert fresh["bytes"] == 2**20 and fresh["reader"] == "np.max" and fresh["gbps"] > 0


def test_slow_calls_are_not_called_again_to_calibrate():
    log = []
    calls = {n: (lambda n=n: log.append(n)) for n in "ab"}
    time_round_robin(calls, repeats=2, min_sample_s=0.0, settle_s=0.0, known_s={"a": 60.0})
    assert log[:1] == ["b"] and log.count("a") == 2  # only the two timed rounds


@pytest.mark.skipif(not torch_available(), reason="torch not installed (requirements-bench.txt)")
def test_the_torch_worker_computes_times_and_reports_errors():
    """torch in a process of its own (what the benchmark does when the kernels bound MKL)."""
    from attnviz.bench.torchworker import TorchWorker

    worker = TorchWorker()
    try:
        q, k, v = qkv(1, 4, 2, 33, 70, 16, seed=2)
        mask = visible_mask(33, 70, causal=True, q_offset=37)
        worker.ask("load", q, k, v, False, mask)
        O_ref, _ = attention_reference(q, k, v, causal=True)
        assert rel_err(worker.ask("out"), O_ref) < 1e-5
        assert 0 < worker.ask("time", 3) < 10
        assert worker.ask("threads", None) >= 1
        with pytest.raises(RuntimeError, match="torch worker: ValueError: unknown request"):
            worker.ask("nonsense")
        assert worker.ask("time", 1) > 0  # still serving after an error
    finally:
        worker.close()
    assert worker.proc.returncode == 0
