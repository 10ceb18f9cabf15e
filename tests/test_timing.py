"""The timing methodology on a fake clock (autorange, samples, min/median/spread, warm-up
outliers), the contention reading, the budget refusal before any allocation, the timing
queue, the roofline's traffic model and its sentence, and the timing charts' axes."""
import json
import re
import threading
import time
import tracemalloc

import numpy as np
import pytest

from attnviz import contention, plots, roofline, sampling, timing
from attnviz.masks import tile_status
from attnviz.runqueue import Cancelled, RunQueue


class FakeClock:
    """A clock that moves only when a call says how long it took."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def call(self):
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def test_autorange_grows_calls_per_sample_as_timeit_until_a_sample_takes_the_target():
    clock = FakeClock([0.03])
    number, t = sampling.autorange(clock.call, clock=clock, target_s=0.2, budget_s=10)
    assert (number, t) == (10, pytest.approx(0.3))
    assert clock.calls == 1 + 2 + 5 + 10  # tried 1, 2, 5, then 10 calls


def test_autorange_takes_one_call_for_a_slow_call_and_stops_growing_at_the_budget():
    clock = FakeClock([1.5])
    assert sampling.autorange(clock.call, clock=clock, target_s=0.2, budget_s=3) == (1, 1.5)
    clock = FakeClock([0.15])  # 2 calls would take 0.3 s > budget 0.25: stay at 1
    assert sampling.autorange(clock.call, clock=clock, target_s=0.2,
                              budget_s=0.25) == (1, pytest.approx(0.15))
    assert clock.calls == 1


def test_measure_excludes_warm_up_and_calibration_and_drops_a_slow_first_sample():
    # warm-up 1 s; autorange: 1 call of 0.25 s (>= 0.2: one call per sample); then samples
    durations = [1.0, 0.25, 0.9, 0.30, 0.20, 0.25, 0.22]
    clock = FakeClock(durations)
    s = sampling.measure(clock.call, repeats=5, clock=clock, target_s=0.2, budget_s=100)
    assert s.number == 1
    assert s.dropped == (pytest.approx(0.9),)  # 0.9 > 1.5 x median(0.30, 0.20, 0.25, 0.22)
    assert s.times == pytest.approx((0.30, 0.20, 0.25, 0.22))
    assert (s.n, s.min, s.median) == (4, pytest.approx(0.20), pytest.approx(0.235))
    q1, q3 = 0.215, 0.2625  # inclusive quartiles of 0.20, 0.22, 0.25, 0.30
    assert s.spread == pytest.approx((q3 - q1) / 0.235)
    assert clock.calls == len(durations)


def test_measure_divides_by_the_calls_per_sample_and_stops_at_the_budget():
    clock = FakeClock([0.05])  # 5 calls per sample: 0.25 s a sample, 0.05 s a call
    s = sampling.measure(clock.call, repeats=7, clock=clock, target_s=0.2, budget_s=0.6)
    assert s.number == 5 and s.times == pytest.approx((0.05,) * 3)  # budget: min 3 samples
    clock = FakeClock([0.05])
    s = sampling.measure(clock.call, repeats=7, clock=clock, target_s=0.2, budget_s=100)
    assert s.n == 7 and s.spread == pytest.approx(0.0, abs=1e-9)


def test_side_by_side_takes_the_methods_samples_in_turns_so_a_burst_hits_both():
    """Two methods on one fake clock: each warmed up and autoranged alone, then samples in
    turns. A burst of load (every call 3x slower) during rounds 2-3 lands on both methods,
    so the ratio of their medians stays 2, where timing one after the other put the whole
    burst on one method."""
    clock = FakeClock([0.0])
    order = []

    def method(name, base):
        def call():  # calls 6-9 (rounds 2 and 3, after 4 warm-up/calibration calls): 3x
            clock.now += base * (3.0 if 6 <= len(order) <= 9 else 1.0)
            order.append(name)
        return call

    a, b = method("a", 0.25), method("b", 0.5)
    got = sampling.measure_side_by_side({"a": a, "b": b}, repeats=6, clock=clock,
                                        target_s=0.2, budget_s=100)
    # warm-up + 1 calibration call each (>= 0.2 s: one call per sample), then turns
    assert order[:4] == ["a", "a", "b", "b"] and order[4:] == ["a", "b"] * 6
    assert got["a"].number == got["b"].number == 1 and got["a"].n == got["b"].n == 6
    assert got["b"].median / got["a"].median == pytest.approx(2.0)
    assert got["b"].min / got["a"].min == pytest.approx(2.0)


def test_side_by_side_budget_counts_per_method():
    clock = FakeClock([0.05])  # 5 calls per sample: 0.25 s a sample
    got = sampling.measure_side_by_side({"x": clock.call, "y": clock.call}, repeats=7,
                                        clock=clock, target_s=0.2, budget_s=0.6)
    assert [s.n for s in got.values()] == [3, 3]  # 3 rounds of 0.5 s: past 2 x 0.6 s


def test_only_leading_outliers_are_warm_up_and_three_samples_stay():
    kept, dropped = sampling.drop_warmup_outliers([5.0, 4.0, 1.0, 1.1, 0.9, 3.0])
    assert dropped == [5.0, 4.0] and kept == [1.0, 1.1, 0.9, 3.0]  # a late slow one stays
    kept, dropped = sampling.drop_warmup_outliers([9.0, 8.0, 1.0])
    assert dropped == [] and kept == [9.0, 8.0, 1.0]


def test_measure_calls_check_before_each_sample_so_a_run_can_be_cancelled():
    clock = FakeClock([0.3])
    seen = []

    def check():
        seen.append(clock.calls)
        if len(seen) == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        sampling.measure(clock.call, repeats=5, clock=clock, check=check)
    assert seen == [2, 3]  # after warm-up + calibration, then after the first sample


def test_using_threads_sets_numba_threads_in_this_thread_and_restores_them():
    import numba

    before = numba.get_num_threads()
    with sampling.using_threads(1) as n:
        assert n == numba.get_num_threads() == 1
    assert numba.get_num_threads() == before


def test_other_cores_is_the_machine_busy_time_minus_ours_per_wall_second():
    assert contention.other_cores((0.0, 100.0, 5.0), (2.0, 103.0, 6.0)) == pytest.approx(1.0)
    assert contention.other_cores((0.0, 100.0, 5.0), (2.0, 101.0, 6.0)) == 0.0
    assert contention.other_cores(None, (1.0, 1.0, 1.0)) is None
    a = contention.cpu_snapshot()
    b = contention.cpu_snapshot()
    assert a is not None and b[0] >= a[0]


def test_the_contention_sentence_says_when_the_machine_was_busy_and_what_that_does():
    quiet = contention.describe(0.05, threads=1, cores=2)
    assert quiet.startswith("The machine was quiet") and "0.05 of this machine's 2" in quiet
    busy = contention.describe(1.6, threads=2, cores=2)
    assert busy.startswith("Busy machine: other processes used 1.60 of this machine's 2 cores")
    assert "roughly 1.8x" in busy and "longer" in busy and "min" in busy
    assert "caches" in contention.describe(0.5, threads=1, cores=2)
    # barely over the cores: no "longer by roughly 1.0x", which would say nothing
    barely = contention.describe(1.05, threads=1, cores=2)
    assert "almost all the cores" in barely and "roughly" not in barely
    assert "roughly 1.3x" in contention.describe(1.6, threads=1, cores=2)
    assert "could not be read" in contention.describe(None, threads=1)


def test_an_over_budget_call_is_refused_from_its_shapes_before_any_allocation():
    p = timing.Problem(16, 64, 8, 4096, 4096, 128)  # the issue's ?L=4096&B=16&Hq=64&Hkv=8
    tracemalloc.start()
    t0 = time.perf_counter()
    res = timing.time_problem(p, scenario="random", seed=0, repeats=3, ram=2**34)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert res["standard"].skip_kind == res["streaming"].skip_kind == "size"
    assert "GiB" in res["streaming"].skipped and res["streaming"].samples is None
    assert peak < 2**20 and elapsed < 1.0  # no input was built (they would be 4.5 GiB)
    assert timing.refusal(timing.Problem(1, 8, 8, 8192, 8192, 128)).kind == "time"


def test_the_queue_runs_jobs_one_at_a_time_in_order_and_says_who_is_ahead():
    q = RunQueue()
    gate, log = threading.Event(), []

    def blocking(job):
        log.append(("start", job.label))
        gate.wait(10)
        log.append(("end", job.label))
        return 1

    def quick(job):
        log.append(("start", job.label))
        job.items.append(42)
        return 2

    a = q.submit("sweep A", "s1", blocking)
    b = q.submit("timing B", "s2", quick)
    c = q.submit("timing C", "s3", quick)
    deadline = time.monotonic() + 10
    while a.state != "running" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.state == "running" and b.state == c.state == "queued"
    assert [j.label for j in c.ahead()] == ["sweep A", "timing B"]
    b.cancel()  # a cancelled job no longer counts as ahead, and never runs
    assert [j.label for j in c.ahead()] == ["sweep A"]
    gate.set()
    while c.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (a.state, a.result, b.state, c.state, c.items) == ("done", 1, "cancelled", "done",
                                                               [42])
    assert log == [("start", "sweep A"), ("end", "sweep A"), ("start", "timing C")]
    assert c.ahead() == []


def test_a_failing_job_is_reported_and_the_queue_goes_on():
    q = RunQueue()
    bad = q.submit("bad", "s", lambda job: 1 / 0)
    good = q.submit("good", "s", lambda job: "ok")
    deadline = time.monotonic() + 10
    while good.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bad.state == "failed" and bad.error.startswith("ZeroDivisionError")
    assert good.result == "ok"


# --- the roofline ----------------------------------------------------------------------------

@pytest.mark.parametrize("Lq, Lk, causal, window, Br, Bc", [
    (300, 300, True, None, 64, 32), (96, 500, True, 40, 16, 64), (77, 130, False, None, 32, 16),
    (1, 1000, True, None, 128, 64), (1, 1000, True, 100, 128, 64)])
def test_streaming_visits_exactly_the_tiles_the_mask_does_not_skip(Lq, Lk, causal, window, Br,
                                                                   Bc):
    p = timing.Problem(1, 1, 1, Lq, Lk, 16, causal=causal, window=window, Br=Br, Bc=Bc)
    status = tile_status(Lq, Lk, Br, Bc, causal=causal, q_offset=Lk - Lq, window=window or 0)
    assert roofline.streaming_tiles(p) == int((status != "skipped").sum())


@pytest.mark.parametrize("Lq, Lk, window, Br, Bc", [(300, 300, None, 64, 32),
                                                    (96, 500, 40, 16, 64), (1, 1000, None, 8, 64)])
def test_computed_pairs_are_the_pairs_inside_the_visited_tiles(Lq, Lk, window, Br, Bc):
    p = timing.Problem(1, 2, 1, Lq, Lk, 16, window=window, Br=Br, Bc=Bc)
    status = tile_status(Lq, Lk, Br, Bc, causal=True, q_offset=Lk - Lq, window=window or 0)
    rows = np.diff(np.minimum(np.arange(0, status.shape[0] + 1) * Br, Lq))  # [Tr]
    keys = np.diff(np.minimum(np.arange(0, status.shape[1] + 1) * Bc, Lk))  # [Tc]
    inside = (rows[:, None] * keys[None, :])[status != "skipped"].sum()
    assert roofline.computed_pairs(p, "streaming") == 2 * inside
    assert roofline.computed_pairs(p, "standard") == 2 * Lq * Lk


def test_bytes_moved_counts_passes_over_S_for_standard_and_tiles_for_streaming():
    p = timing.Problem(2, 4, 2, 256, 256, 32, causal=False, Br=64, Bc=64)
    io = 2 * 4 * 2 * 4 * 256 * 32 + 4 * 2 * 4 * 256  # Q in, O out, LSE out
    kv = 2 * 4 * 32  # one key's K and V rows
    S = 4 * 2 * 4 * 256 * 256
    assert roofline.bytes_moved(p, "standard") == io + 2 * 4 * 4 * 256 * kv + 5 * S
    assert roofline.bytes_moved(p, "streaming") == io + 2 * 4 * 16 * 64 * kv
    assert roofline.intensity(p, "streaming") > 4 * roofline.intensity(p, "standard")


def _row(L, t_std, t_str, D=64, H=8):
    p = timing.Problem(1, H, H, L, L, D)
    return {"L": L, "problem": p, "standard_s": t_std, "streaming_s": t_str,
            "standard_gflops": p.flops / t_std / 1e9, "streaming_gflops": p.flops / t_str / 1e9}


ROOFS = roofline.Roofs(gemm_gflops=80.0, read_gbps=20.0, call_overhead_s=30e-6, threads=2)
CACHES = {"L2": 2**20, "L3": 32 * 2**20}


def test_the_sentence_names_why_the_winner_wins():
    start = roofline.explain(_row(128, 60e-6, 90e-6), ROOFS, CACHES)
    assert start.startswith("At L = 128, standard is 1.5x faster (60 µs vs 90 µs)")
    assert "thread start-up" in start and "30 µs" in start
    fit = roofline.explain(_row(1024, 4e-3, 6e-3), ROOFS, CACHES)
    assert "cache fit" in fit and "64 x 1024 floats = 256 KiB" in fit and "per-tile" in fit
    work = roofline.explain(_row(1024, 6e-3, 2e-3), ROOFS, CACHES)
    assert "work, not memory traffic" in work and "all 1024 x 1024 scores" in work
    assert "2x the visible ones" in work
    passes = roofline.explain(_row(8192, 2.0, 0.5), ROOFS, CACHES)
    assert passes.startswith("At L = 8192, streaming is 4x faster") and "passes over memory" in passes
    assert "2 MiB" in passes  # a task's 64 rows of 8192 floats, beyond the 1 MiB L2
    assert "exceed the 1 MiB L2" in passes
    # rows that just fit the L2 (64 x 4096 floats = 1 MiB) under an S beyond the L3: the L3
    # is why, never "1 MiB exceed the 1 MiB L2" (a learner read that)
    l3 = roofline.explain(_row(4096, 0.5, 0.2), ROOFS, CACHES)
    assert "passes over memory" in l3 and "exceed" not in l3
    assert "its rows fit the 1 MiB L2 cache, but the whole S, 512 MiB, is more than the 32 MiB" \
        " L3 holds" in l3
    # the traffic's terms are shown and add up: passes x S + the rest = the total
    units = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    num = r"([\d.]+) (B|KiB|MiB|GiB)"
    got = re.search(rf"{roofline.S_PASSES} x {num} = {num}, plus {num} for Q, K, V in and O, "
                    rf"LSE out, about {num} of memory traffic", passes)
    assert got, passes
    S, passes_b, rest, total = (float(got[2 * i + 1]) * units[got[2 * i + 2]] for i in range(4))
    assert S == pytest.approx(4 * _row(8192, 2.0, 0.5)["problem"].Hq * 8192**2, rel=0.01)
    assert passes_b == pytest.approx(roofline.S_PASSES * S, rel=0.01)
    assert passes_b + rest == pytest.approx(total, rel=0.01)
    assert total == pytest.approx(
        roofline.bytes_moved(_row(8192, 2.0, 0.5)["problem"], "standard"), rel=0.01)
    assert roofline.explain({**_row(256, 1e-3, 1e-3), "standard_s": None}, ROOFS, CACHES) == ""


def test_roofline_chart_draws_the_same_run_roof_and_labels_points_by_L():
    rows = [_row(L, 1e-3 * L / 256, 1e-3 * L / 512) for L in (256, 512)]
    fig = plots.roofline_chart(roofline.points(rows), 80.0, 20.0)
    roof = next(t for t in fig.data if t.name.startswith("roof"))
    assert list(roof.x)[1] == pytest.approx(4.0) and list(roof.y)[1:] == [80.0, 80.0]
    assert roof.y[0] == pytest.approx(20.0 * roof.x[0])  # the bandwidth line
    std = next(t for t in fig.data if t.name.startswith("standard"))
    assert list(std.text) == ["256", "512"]
    json.loads(fig.to_json())


# --- the timing charts' axes and words ----------------------------------------------------------

def test_durations_read_in_their_unit():
    assert plots.duration_label(2.08) == "2.08 s"
    assert plots.duration_label(2080e-3) == "2.08 s"
    assert plots.duration_label(0.0146) == "14.6 ms"
    assert plots.duration_label(0.99996) == "1 s"
    assert plots.duration_label(167e-6) == "167 µs"
    assert plots.duration_label(None) == "–"


@pytest.mark.parametrize("lo, hi", [(4.2e-4, 7.1e-4), (1.1e-4, 1.9e-4), (3e-3, 3.3e-3),
                                    (1e-5, 2e-1)])
def test_a_log_axis_gets_at_least_three_ticks_inside_its_range(lo, hi):
    ticks = plots.log_ticks(lo, hi)
    assert len(ticks) >= 3 and all(lo <= t <= hi for t in ticks)
    assert ticks == sorted(ticks) and len({plots.duration_label(t) for t in ticks}) == len(ticks)


def test_decode_sweep_chart_has_several_y_ticks_and_names_why_standard_did_not_run():
    rows = [{"L": L, "standard_s": s, "streaming_s": t, "standard_skipped": None}
            for L, s, t in ((1024, 4.1e-4, 4.4e-4), (2048, 5.0e-4, 5.1e-4))]
    rows += [{"L": 16384, "standard_s": None, "streaming_s": 7.0e-4,
              "standard_skipped": "400 GFLOP per call", "standard_skip_kind": "time"},
             {"L": 4096, "standard_s": None, "streaming_s": 6.0e-4,
              "standard_skipped": "memory guard: ...", "standard_skip_kind": "memory"},
             {"L": 8192, "standard_s": None, "streaming_s": 6.5e-4,
              "standard_skipped": "300 GFLOP per call", "standard_skip_kind": "time"}]
    fig = plots.crossover_chart(rows)
    assert len(fig.layout.yaxis.tickvals) >= 3
    names = {t.name: list(t.x) for t in fig.data}
    assert names["standard not run: over the time budget"] == [8192, 16384]
    assert names["standard not run: its memory guard (S too big)"] == [4096]
    assert not any("refused (memory guard)" in n for n in names)


def test_tiny_real_timing_agrees_between_methods_and_reports_samples():
    p = timing.Problem(1, 2, 1, 96, 96, 16, Br=32, Bc=32)
    q, k, v = timing.inputs_for(p, "random", 0)
    res = timing.compare(p, q, k, v, repeats=3, ram=2**34, target_s=0.01)
    for m in ("standard", "streaming"):
        run = res[m]
        assert run.samples.n >= 3 and run.min_s <= run.median_s
        assert run.gflops == pytest.approx(p.flops / run.median_s / 1e9)
        assert run.other_cores is None or run.other_cores >= 0
    assert res["max_abs_diff"] < 1e-5
    np.testing.assert_array_less(0, [res["standard"].min_s, res["streaming"].min_s])


def _run(method, times):
    return timing.Run(method, samples=sampling.Samples(tuple(times), number=10))


def test_the_verdict_names_the_faster_method_by_min_and_median():
    verdict = timing.verdict
    std, stream = _run("standard", [260e-6, 273e-6, 300e-6]), _run("streaming", [302e-6, 352e-6])
    assert verdict(std, stream) == ("Standard is 1.16x faster than streaming here by the min "
                                    "(1.20x by the median).")
    long_std, long_stream = _run("standard", [1.03, 1.04]), _run("streaming", [0.404, 0.424])
    assert verdict(long_std, long_stream).startswith("Streaming is 2.55x faster than standard")
    # within 5%, or min and median disagreeing: no winner claimed
    assert verdict(_run("standard", [1.0, 1.2]), _run("streaming", [1.03, 1.1])).startswith(
        "Too close to call")
    assert verdict(_run("standard", [1.0, 1.5]), _run("streaming", [1.2, 1.3])).startswith(
        "Too close to call")
    assert verdict(std, timing.Run("streaming", skipped="over the budget")) is None


def test_the_sweep_reaches_down_to_the_configurations_own_length():
    from attnviz.timed_call import sweep_Ls
    from attnviz.viewconfig import ViewConfig

    assert sweep_Ls(ViewConfig(L=128), 1024) == [128, 256, 512, 1024]  # the default's L
    assert sweep_Ls(ViewConfig(L=4096), 2048) == [256, 512, 1024, 2048]
    assert sweep_Ls(ViewConfig(L=20), 512) == [64, 128, 256, 512]  # not below 64
    chunked = ViewConfig(mode="chunked", chunk=96, cache=32)
    assert all(L > 96 for L in sweep_Ls(chunked, 1024))
