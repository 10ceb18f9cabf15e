"""The timing panel through AppTest: a run goes to the process's timing queue, the page polls
it (a fragment), and the results say what was measured: min, median, spread, samples, the
machine's load, each method's peak memory beside the Memory tab's model; the L sweep draws
the crossover and a roofline with a sentence; over-budget sizes are refused at once; a run
waiting behind another session's says so."""
import threading
import time

import numba
import pytest

from attnviz import memory, timing
from attnviz.runqueue import QUEUE
from kernels import default_blocks
from tests.test_app import chart, named, ok, open_app, open_tab, shown, table, values


def job(at, kind: str):
    return at.session_state["timing_jobs"][kind]["job"]


def wait_done(at, kind: str, timeout: float = 240.0):
    """Rerun the page (as the polling fragment does) until the ``kind`` job has ended."""
    deadline = time.monotonic() + timeout
    while job(at, kind).pending:
        assert time.monotonic() < deadline, f"{kind} still {job(at, kind).state}"
        time.sleep(0.5)
        ok(at.run())
    ok(at.run())
    assert job(at, kind).state == "done", job(at, kind).error
    return at


def _bytes(label: str) -> float:
    value, unit = label.split(" ")
    return float(value) * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]


def _load_sentence(at) -> str:
    texts = [c.value for c in at.caption] + [w.value for w in at.warning]
    return next(t for t in texts if t.startswith(("The machine was quiet", "Busy machine")))


def test_a_timing_runs_in_the_background_and_reports_samples_load_and_memory():
    # L = 512: an 8 MiB score matrix. Linux counts RSS in per-CPU batches (32 pages each), so
    # a peak read in a fresh process can be off by ~64 pages here: at the default L = 128
    # (576 KiB) the measured peak once came out at 0.55x the model
    at = open_tab(open_app(L=512), "Timing")
    assert "timing_jobs" not in at.session_state  # nothing runs until asked
    assert at.radio(key="timing_threads").value == "one"
    at.button(key="run_timing").click().run()
    assert job(ok(at), "current").state in ("queued", "running", "done")  # the click returned
    wait_done(at, "current")
    runs = table(at, "method")
    assert list(runs["method"]) == ["standard", "streaming"]
    assert all(runs["samples"].str.match(r"^\d+ x \d+ calls?"))
    assert all(runs["spread (IQR)"].str.startswith("±"))
    assert all(runs[c].str.endswith((" s", " ms", " µs")).all() for c in ("min", "median"))
    # one sentence says who won, from the same run's samples
    res = job(at, "current").result["res"]
    said = timing.verdict(res["standard"], res["streaming"])
    assert said and any(said in m.value for m in at.markdown)
    # memory: measured in a fresh process, next to the Memory tab's model for the same call
    s = memory.Shape(1, 8, 8, 512, 512, 16)
    std, stream = runs.set_index("method")["peak extra memory (measured)"]
    model = runs.set_index("method")["memory model (the call as timed)"]
    assert _bytes(model["standard"]) == pytest.approx(memory.standard_bytes(s), rel=0.01)
    # the model counts the timed blocks (the kernel's), and says it is not the sidebar's
    Br, Bc = default_blocks(16)
    assert _bytes(model["streaming"]) == pytest.approx(
        memory.streaming_bytes(s, Br, Bc, 1), rel=0.01)
    note = next(c.value for c in at.caption if c.value.startswith("Threads: 1 of"))
    assert (f"streaming blocks {Br} x {Bc} (the kernel default), not the sidebar's 16 x 16 "
            "that the Memory tab uses") in note
    # RSS of a fresh process, against the model's bytes: 2x would be a wrong model
    assert 0.8 < _bytes(std) / memory.standard_bytes(s) < 2.0
    assert _bytes(std) > 2 * _bytes(stream) > 0  # never "standard 0 B, streaming 164 KiB"
    assert _load_sentence(at)
    diff = next(c.value for c in at.caption if c.value.startswith("max |O_standard"))
    assert float(diff.split("= ")[1].split(" ")[0]) < 1e-4
    assert diff.endswith(f"streaming blocks {Br} x {Bc} (kernel default).")
    assert any(c.value.startswith(f"Threads: 1 of {numba.config.NUMBA_NUM_THREADS}")
               for c in at.caption)
    # the kernel choices in force on the timing thread (tuned per host, or built-in)
    assert any(c.value.startswith("Kernel choices: prefill blocks D=64:") for c in at.caption)
    open_tab(at, "Memory")  # the memory panel marks the peaks just measured
    assert "measured: streaming at L = 512" in shown(at, "memory_chart")[1]


def test_decode_names_its_split_kv_chunks_not_square_blocks():
    at = open_tab(open_app(mode="decode", cache=4095, D=64, Hq=8, Hkv=2), "Timing")
    at.radio(key="timing_threads").set_value("all").run()
    at.button(key="run_timing").click().run()
    wait_done(ok(at), "current")
    diff = next(c.value for c in at.caption if c.value.startswith("max |O_standard"))
    assert "streaming decode splits each KV head's keys into" in diff
    assert "blocks 128 x 128" not in diff
    runs = table(at, "method")
    cells = runs[["min", "median"]].to_numpy().ravel()
    assert all("e+" not in c and c.endswith((" s", " ms", " µs")) for c in cells), cells
    assert not any(c == "0 B" for c in runs["peak extra memory (measured)"])


def test_a_run_waits_its_turn_behind_another_sessions_and_says_so():
    gate = threading.Event()
    other = QUEUE.submit("sweep over L up to 4096", "someone-else", lambda j: gate.wait(60))
    try:
        at = open_tab(open_app(), "Timing")
        at.button(key="run_timing").click().run()
        notice = next(i.value for i in ok(at).info if i.value.startswith("Waiting"))
        assert notice.startswith("Waiting: 1 timing run ahead of this one (another session's "
                                 "sweep over L up to 4096")
        assert job(at, "current").state == "queued"
    finally:
        gate.set()
    wait_done(at, "current")
    assert other.state == "done"
    assert not any(i.value.startswith("Waiting") for i in at.info)


def test_the_L_sweep_draws_the_crossover_and_a_roofline_and_says_why():
    at = open_tab(open_app(), "Timing")
    at.select_slider(key="sweep_Lmax").set_value(1024).run()
    at.button(key="run_sweep").click().run()
    wait_done(ok(at), "sweep")
    spec = chart(at, "crossover_chart")
    for name in ("standard (materializes S)", "streaming (tiles)"):
        assert named(spec, name)["x"] == [128, 256, 512, 1024]  # from the view's own L
    assert len(spec["layout"]["yaxis"]["tickvals"]) >= 3
    roof = chart(at, "roofline_chart")
    assert next(t for t in roof["data"] if t["name"].startswith("roof: GEMM"))
    assert named(roof, "streaming (tiles)")["text"] == ["128", "256", "512", "1K"]
    # the sentence at the view's own L (the default 128), and at the largest
    why = [m.value for m in at.markdown if m.value.startswith("**Why:** At L = 128,")]
    assert why and "faster" in why[0]
    assert any(c.value.startswith("Roofs measured in this run on 1 thread") for c in at.caption)
    assert _load_sentence(at)
    # the points as numbers too, with how firm each is (the charts show medians only)
    pts = table(at, "L")
    assert list(pts["L"]) == ["128", "256", "512", "1024"]
    for col in ("standard median (min, spread, samples)", "streaming median (min, spread, samples)"):
        assert all(pts[col].str.match(r"^\S+ \S+ \(min \S+ \S+, ±\d+%, \d+ samples\)$")), pts[col]


def test_an_over_budget_configuration_is_refused_at_once_without_a_job():
    at = open_tab(open_app(L=1024, B=16, Hq=64, Hkv=8, D=128), "Timing")
    t0 = time.perf_counter()
    at.button(key="run_timing").click().run()
    elapsed = time.perf_counter() - t0
    assert any(e.value.startswith("Not timed: inputs and output need") for e in at.error)
    # what the standard method would hold, beside the budget it is refused by
    assert any("standard's score matrix S alone would need 4 GiB" in e.value
               for e in at.error)
    assert "timing_jobs" not in at.session_state and not at.exception
    assert elapsed < 10  # a script rerun, no inputs built (AppTest's own overhead included)
    at.button(key="run_blocks").click().run()
    assert any(e.value.startswith("Not timed") for e in at.error)


def test_a_sweep_names_the_blocks_each_length_ran_with(monkeypatch):
    """With blocks tuned apart per length class, the sweep's caption says which lengths ran
    with which blocks (the timed calls take them from ``default_blocks(D, Lk)``)."""
    from attnviz.timed_call import problem, sweep_layout
    from attnviz.viewconfig import ViewConfig
    from kernels import tuning

    odd = tuning.Tuning(blocks={64: {0: (48, 80), 768: (64, 96), 2048: (112, 144)}},
                        source="test", host=tuning.host_key())
    monkeypatch.setattr(tuning, "active", lambda: odd)
    cfg = ViewConfig(D=64)
    ps = [problem(cfg, L) for L in (512, 1024, 2048, 4096)]
    assert [p.blocks for p in ps] == [(48, 80), (64, 96)] + [(112, 144)] * 2
    assert sweep_layout(ps) == ("streaming blocks 48 x 80 (kernel default) at L = 512; "
                                "streaming blocks 64 x 96 (kernel default) at L = 1024; "
                                "streaming blocks 112 x 144 (kernel default) at L = 2048-4096")
    assert sweep_layout(ps[2:]) == "streaming blocks 112 x 144 (kernel default)"
    assert sweep_layout([problem(cfg, L, "stepper") for L in (512, 4096)]).count("blocks") == 1


def test_decode_layout_counts_the_chunks_of_the_whole_mask(monkeypatch):
    """The caption's chunk count is the kernel's for the mask as timed, sinks included: with
    chunks of at least 512 keys, a window of 512 keys is one chunk, and 512 sinks before it
    make two."""
    from attnviz.timed_call import layout, problem
    from attnviz.viewconfig import ViewConfig
    from kernels import tuning

    chunk512 = tuning.Tuning(decode_min_chunk=512, source="test", host=tuning.host_key())
    monkeypatch.setattr(tuning, "active", lambda: chunk512)
    for mask, C in (("window", 1), ("sinks", 2)):
        p = problem(ViewConfig(mode="decode", cache=8191, D=64, Hq=4, Hkv=1, mask=mask, W=512,
                               sinks=512))
        assert p.chunks == C, mask
        assert f"into {C} chunk{'s' * (C > 1)} of" in layout(p), (mask, layout(p))


def test_decode_block_sweep_is_over_the_kv_block_only_and_marks_default_and_sidebar():
    """Decode has no Q block to choose: the sweep is one row over the KV blocks the autotune
    races for decode, with the kernel's default and the sidebar's Bc marked on the grid."""
    from kernels import decode_block
    from kernels.autotune import FULL

    at = open_tab(open_app(mode="decode", cache=1023, D=64, Hq=8, Hkv=2, Bc=64), "Timing")
    assert any(m.value.startswith("##### Block sizes: streaming decode's GFLOP/s over the KV")
               for m in at.markdown)
    assert at.button(key="run_blocks").label == (
        f"Sweep {len(FULL.decode_Bc)} block sizes for this configuration")
    at.button(key="run_blocks").click().run()
    wait_done(ok(at), "blocks")
    spec = chart(at, "block_sweep_chart")
    heat = named(spec, "GFLOP/s")
    assert heat["y"] == ["1"] and heat["x"] == [str(b) for b in FULL.decode_Bc]
    assert (values(heat["z"]) > 0).all()
    shapes = {s["name"]: s for s in spec["layout"]["shapes"]}
    col = FULL.decode_Bc.index(64)
    assert (shapes["sidebar (stepper)"]["x0"] + shapes["sidebar (stepper)"]["x1"]) / 2 == col
    assert "sidebar" in heat["text"][0][col]
    # the kernel's tile is one the autotune raced (or the built-in, also on the grid)
    k = FULL.decode_Bc.index(decode_block(64))
    assert (shapes["kernel default"]["x0"] + shapes["kernel default"]["x1"]) / 2 == k
    assert "kernel" in heat["text"][0][k]


def test_prefill_block_sweep_fills_the_grid_and_names_a_tile_off_it():
    """The (Br, Bc) heatmap once the sweep ends: every cell measured, the best outlined, the
    sidebar's tile marked; the kernel's own blocks, when off this grid, named below it."""
    from attnviz.ui import timing_jobs as jobs

    at = open_tab(open_app(L=64, D=16, Br=32, Bc=64), "Timing")
    at.button(key="run_blocks").click().run()
    wait_done(ok(at), "blocks")
    spec = chart(at, "block_sweep_chart")
    heat = named(spec, "GFLOP/s")
    assert heat["y"] == [str(b) for b in jobs.SWEEP_BRS]
    assert heat["x"] == [str(b) for b in jobs.SWEEP_BCS]
    assert (values(heat["z"]) > 0).all()
    shapes = {s["name"]: s for s in spec["layout"]["shapes"]}
    side = shapes["sidebar (stepper)"]
    assert ((side["x0"] + side["x1"]) / 2, (side["y0"] + side["y1"]) / 2) == (
        jobs.SWEEP_BCS.index(64), jobs.SWEEP_BRS.index(32))
    Br, Bc = default_blocks(16, 64)
    if Br in jobs.SWEEP_BRS and Bc in jobs.SWEEP_BCS:
        assert "kernel default" in shapes
    else:
        assert any(c.value == f"The kernel default {Br} x {Bc} lies off this grid."
                   for c in at.caption)
