"""The autotune and its store: bounded in time (on a fake clock), stored per host key, read
by a new process, ignored for another CPU, BLAS or thread count; the kernels run correctly
with whatever it chose (float64 oracle, ragged shapes)."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numba
import numpy as np
import pytest

import attnviz
from attnviz import splitkv
from kernels import autotune as at
from kernels import (
    decode_block,
    decode_split,
    default_blocks,
    streaming_attention,
    tuning,
    tuning_summary,
)
from tests.helpers import assert_matches_oracle, qkv

ROOT = Path(__file__).resolve().parents[1]
TINY = at.Sizes(Ds=(16,), decode=((4, 2, 300),), decode_Bc=(32, 64), chunk=((2, 1, 300),),
                chunk_D=16, chunks=(64, 128), prefill=((2, 100, 100), (1, 80, 800)),
                blocks=((0, ((32, 32), (64, 32))), (768, ((64, 64),))))
# distinctive values, far from the built-in ones, so that reading them back proves the store
ODD = {"blocks": {64: {0: (48, 80), 768: (64, 96), 2048: (112, 144)}}, "decode": {64: (96, (True, False))},
       "decode_min_chunk": 200}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty tuning store of its own (the Numba cache stays where it is: its folder was
    fixed when ``kernels`` was imported); the autotune switch on."""
    monkeypatch.setenv("ATTNVIZ_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv(tuning.ENV, raising=False)
    tuning._memo.clear()
    yield tmp_path / "autotune"
    tuning._memo.clear()


def odd(host=None) -> tuning.Tuning:
    return tuning.Tuning(blocks=ODD["blocks"], decode=ODD["decode"], decode_min_chunk=ODD["decode_min_chunk"],
                         source="test", host=host or tuning.host_key(), seconds=1.0,
                         complete=True)


class FakeClock:
    """Time that moves only when read: ``step`` seconds per read."""

    def __init__(self, step: float):
        self.t, self.step, self.reads = 0.0, step, 0

    def __call__(self) -> float:
        self.t += self.step
        self.reads += 1
        return self.t


def test_no_store_means_built_in_defaults(store):
    assert not tuning.active().tuned
    assert default_blocks(128) == tuning.BUILTIN_BLOCKS[128]
    assert decode_block(64) == tuning.BUILTIN_BLOCKS[64][1]
    assert "built-in defaults" in tuning_summary()["text"]


def test_the_autotune_stays_within_its_budget_on_a_fake_clock(store):
    clock = FakeClock(0.05)
    t = at.autotune(budget_s=3.0, clock=clock, sizes=TINY, save=False)
    # every stage stops at its deadline: at most one sample (a few reads) past the budget
    assert t.seconds <= 3.0 + 10 * clock.step
    assert clock.reads <= 3.0 / clock.step + 40
    assert t.tuned and t.host == tuning.host_key()
    assert not store.exists()  # save=False wrote nothing


def test_a_budget_too_small_for_everything_keeps_the_defaults(store):
    t = at.autotune(budget_s=0.2, clock=FakeClock(0.1), sizes=TINY, save=False)
    assert not t.complete
    assert t.blocks_for(16) == tuning.BUILTIN_BLOCKS[16]  # never raced: the default stays
    assert t.decode_min_chunk == tuning.BUILTIN_DECODE_MIN_CHUNK


def test_a_real_run_stores_a_tuning_that_calls_then_read(store):
    lines = []
    t = at.autotune(budget_s=5.0, sizes=TINY, progress=lines.append)
    assert any("decode tiles D=16" in s for s in lines) and "autotune done" in lines[-2]
    assert tuning.path_for(tuning.host_key()).is_file()
    assert tuning.active().tuned and tuning.active().decode_for(16) == t.decode_for(16)
    Bc, _ = t.decode_for(16)
    assert Bc in TINY.decode_Bc + (tuning.BUILTIN_BLOCKS[16][1],)
    measured = t.measured["decode D=16"]
    assert measured["Bc=128 BLAS"]["vs_default"] == 1.0  # the default, scored against itself
    assert f"{Bc} keys" in tuning_summary()["text"] and "tuned on this host" in \
        tuning_summary()["text"]


def test_the_store_survives_a_restart_and_other_hosts_ignore_it(store):
    tuning.save(odd())
    code = ("import json, kernels, numba; from kernels import tuning;"
            "print(json.dumps([kernels.default_blocks(64), kernels.decode_block(64),"
            " tuning.active().decode_min_chunk, tuning.active().tuned]));"
            "numba.set_num_threads(1);"  # another thread count: another key
            "print(json.dumps([kernels.default_blocks(64), tuning.active().tuned]))")
    env = {**os.environ, "ATTNVIZ_CACHE_DIR": str(store.parent)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first, other = (json.loads(line) for line in done.stdout.split("\n")[:2])
    assert first == [[48, 80], 96, 200, True]
    if numba.get_num_threads() > 1:
        assert other == [list(tuning.BUILTIN_BLOCKS[64]), False]


def test_another_cpu_or_blas_is_ignored(store):
    for other in ({"cpu": "Some Other CPU 9000"}, {"blas": "mkl 2099.1"},
                  {"threads": numba.get_num_threads() + 1}):
        tuning.save(odd({**tuning.host_key(), **other}))
        assert not tuning.active().tuned and default_blocks(64) == tuning.BUILTIN_BLOCKS[64]
    # a file at this host's path that records another key (copied from elsewhere): ignored
    path = tuning.path_for(tuning.host_key())
    data = odd().to_json() | {"host": {**tuning.host_key(), "cpu": "Elsewhere"}}
    path.write_text(json.dumps(data))
    assert not tuning.active().tuned
    path.write_text("{not json")
    assert not tuning.active().tuned
    tuning.save(odd())
    assert tuning.active().tuned and default_blocks(64) == (48, 80)


def test_off_pins_the_defaults_and_never_tunes(store, monkeypatch):
    tuning.save(odd())
    monkeypatch.setenv(tuning.ENV, "off")
    assert not tuning.active().tuned and default_blocks(64) == tuning.BUILTIN_BLOCKS[64]
    assert at.tune_if_missing() is None
    assert "ATTNVIZ_AUTOTUNE=off" in tuning_summary()["text"]


def fake_autotunes(calls: list, others: float | None = 0.0):
    """An autotune that records (threads, budget) and returns the odd tuning for the thread
    count in force, measured while other processes used ``others`` cores."""
    def fake(budget_s, progress, save):
        assert save is False  # tune_if_missing decides what is stored
        t = numba.get_num_threads()
        calls.append((t, budget_s))
        return dataclasses.replace(odd(tuning.host_key(t)), others=others)

    return fake


def test_warmup_tunes_each_missing_thread_count_once(store, monkeypatch):
    n = numba.get_num_threads()
    calls = []
    monkeypatch.setattr(at, "autotune", fake_autotunes(calls))
    attnviz.warmup()  # nothing stored: all threads, then 1 thread (the panel's choice)
    expected = [(n, 10.0), (1, 10.0)] if n > 1 else [(1, 20.0)]  # half the budget each
    assert [t for t, _ in calls] == [t for t, _ in expected]
    assert [b for _, b in calls] == pytest.approx([b for _, b in expected])
    assert numba.get_num_threads() == n and tuning.active().decode_min_chunk == 200
    monkeypatch.setattr(at, "autotune", lambda **kw: pytest.fail("tuned again"))
    attnviz.warmup()  # stored for both: nothing to do


def busy_store(others: float) -> None:
    """Store the odd tuning for every thread count, measured while others used ``others``."""
    for t in dict.fromkeys((numba.get_num_threads(), 1)):
        tuning.save(dataclasses.replace(odd(tuning.host_key(t)), others=others))


def test_a_tuning_measured_on_a_busy_machine_is_redone_when_it_is_quiet(store, monkeypatch):
    busy_store(1.4)
    assert tuning.active().busy and "other processes used 1.40 cores" in tuning_summary()["text"]
    # busy now too: nothing is measured, the stored tuning stays
    monkeypatch.setattr(at.hostload, "others_now", lambda seconds=0.5: 1.1)
    monkeypatch.setattr(at, "autotune", lambda **kw: pytest.fail("tuned on a busy machine"))
    lines = []
    at.tune_if_missing(lines.append)
    assert tuning.active().others == pytest.approx(1.4) and "busy now too" in lines[-1]
    # quiet now: measured again; a redo that was even busier is not kept
    monkeypatch.setattr(at.hostload, "others_now", lambda seconds=0.5: 0.05)
    calls = []
    monkeypatch.setattr(at, "autotune", fake_autotunes(calls, others=1.9))
    at.tune_if_missing(lines.append)
    assert calls and tuning.active().others == pytest.approx(1.4)
    assert "kept the stored tuning" in lines[-1]
    # a quieter redo replaces it, and the summary stops warning
    monkeypatch.setattr(at, "autotune", fake_autotunes(calls, others=0.1))
    at.tune_if_missing(lines.append)
    assert tuning.active().others == pytest.approx(0.1) and not tuning.active().busy
    assert "other processes used" not in tuning_summary()["text"]


def test_a_real_run_records_how_busy_the_machine_was(store):
    t = at.autotune(budget_s=2.0, sizes=TINY)
    assert t.others is not None and 0.0 <= t.others <= os.cpu_count()
    assert tuning.active().others == pytest.approx(t.others, abs=1e-3)  # stored and read back
    assert tuning.active().busy == (t.others >= at.hostload.BUSY_CORES)


def test_the_summary_names_the_values_and_the_host(store):
    tuning.save(odd())
    s = tuning_summary()
    assert s["blocks"][64] == (48, 80) and s["decode"][64] == (96, (True, False))
    assert s["decode_min_chunk"] == 200 and s["host"] == tuning.host_key()
    for part in ("D=64: 48×80", "D=64: 96 keys, S by loops, P~V by BLAS", ">= 200 keys",
                 s["host"]["cpu"],
                 s["host"]["blas"]):
        assert part in s["text"]


@pytest.mark.parametrize("Lk,window", [(1, None), (777, None), (3001, None), (3001, 900)])
def test_the_kernels_are_exact_with_tuned_choices_and_splitkv_follows(store, Lk, window):
    """With the odd tuning (decode tiles of 96 keys, S by loops and P~V by BLAS, chunks of
    >= 200 keys, prefill 48 x 80), the kernels still match the oracle, and the lab's chunks
    are the kernel's."""
    tuning.save(odd())
    q, k, v = qkv(1, 8, 2, 1, Lk, 64, seed=Lk)
    out, lse = streaming_attention(q, k, v, window=window, return_lse=True)
    assert_matches_oracle(out, lse, q, k, v, window=window)
    per, C = decode_split(1, 2, Lk, 96, q_offset=Lk - 1, window=window or 0)
    assert C == 1 or per * 96 >= 200  # chunks of at least the tuned size
    bounds = splitkv.kernel_bounds(Lk, 64, Hkv=2, window=window)
    assert all(b % 96 == 0 for b in bounds[1:-1])  # the tuned decode tile grid
    qp, kp, vp = qkv(1, 2, 1, 131, 131, 64, seed=Lk)
    out, lse = streaming_attention(qp, kp, vp, return_lse=True)  # prefill: 48 x 80 blocks
    assert_matches_oracle(out, lse, qp, kp, vp)
    np.testing.assert_equal(default_blocks(64), (48, 80))


def test_each_length_class_takes_its_own_blocks_and_stays_exact(store):
    """The odd tuning's blocks per length class (48 x 80 short, 64 x 96 from 768 keys, 112 x
    144 from 2048, ragged against L), also for a short chunk of queries against a long cache:
    the kernel's and the trace's defaults agree, and the result matches the oracle."""
    tuning.save(odd())
    _, mid, long, _ = tuning.LK_CLASSES
    assert [default_blocks(64, L) for L in (1, mid - 1, mid, long - 1, long, 10**6)] == \
        [(48, 80)] * 2 + [(64, 96)] * 2 + [(112, 144)] * 2
    assert default_blocks(64) == (48, 80)  # no length given: the short class
    assert attnviz.trace_config(long + 7, long + 7, 64).Br == 112
    assert attnviz.trace_config(300, long, 64).Br == 112  # a chunk of 300 queries
    assert attnviz.trace_config(mid, mid, 64).Br == 64
    assert "D=64: 48×80 (Lk >= 768: 64×96, Lk >= 2048: 112×144)" in tuning_summary()["text"]
    for L, window in ((mid + 5, None), (long + 7, 700)):
        q, k, v = qkv(1, 2, 1, L, L, 64, seed=L)
        out, lse = streaming_attention(q, k, v, return_lse=True, window=window)
        assert_matches_oracle(out, lse, q, k, v, window=window)


def test_a_class_left_untuned_takes_the_blocks_of_the_class_below(store):
    """A budget that ran out before the long classes were raced leaves them to the nearest
    tuned class below; with no class tuned at or below, the built-in blocks hold."""
    t = tuning.Tuning(blocks={64: {0: (48, 80), 768: (64, 96)}}, host=tuning.host_key())
    assert t.blocks_for(64, 100) == (48, 80) and t.blocks_for(64, 1000) == (64, 96)
    assert t.blocks_for(64, 5000) == t.blocks_for(64, 10**5) == (64, 96)
    t = tuning.Tuning(blocks={64: {2048: (112, 144)}}, host=tuning.host_key())
    assert t.blocks_for(64, 1000) == tuning.BUILTIN_BLOCKS[64]
    assert t.blocks_for(64, 9000) == (112, 144)
    assert t.blocks_for(256, 9000) == tuning.BUILTIN_BLOCKS[256]  # nearest D: not tuned


@pytest.mark.parametrize("schema", [1, 2])
def test_a_file_of_an_older_schema_is_measured_again(store, schema):
    """A file from before the length classes (flat blocks per D, schema 1 and 2) is not
    read: the built-in defaults hold until ``make warm`` measures again. The schema number
    alone decides: a file whose content would parse under this schema is not read either."""
    path = tuning.path_for(tuning.host_key())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(odd().to_json()))
    assert tuning.active().tuned  # the control: this schema's file is read
    path.write_text(json.dumps(odd().to_json() | {"schema": schema}))
    assert not tuning.active().tuned
    data = odd().to_json() | {"schema": schema, "blocks": {"64": [48, 80]}}
    if schema == 2:
        data["blocks_long"] = {"64": [112, 144]}
    path.write_text(json.dumps(data))
    assert not tuning.active().tuned and default_blocks(64, 4096) == tuning.BUILTIN_BLOCKS[64]
    # and a file of this schema with a class the code does not know is not read either
    bad = odd().to_json()
    bad["blocks"]["64"]["1000"] = [32, 32]
    tuning.path_for(tuning.host_key()).write_text(json.dumps(bad))
    assert not tuning.active().tuned


class JumpClock(FakeClock):
    """A FakeClock that leaps ``by`` seconds the first time a progress line ends with
    ``when``: the budget runs out at that point of the autotune, and nowhere else."""

    def __init__(self, step, when, by):
        super().__init__(step)
        self.when, self.by = when, by

    def progress(self, line):
        if line.endswith(self.when) and self.by:
            self.t += self.by
            self.by = 0.0


def test_a_class_the_budget_left_unmeasured_is_not_stored(store):
    """The budget runs out as the races of the 800-key class start: the short class keeps
    what it measured, the mid class is not stored (not even as its default), so it takes
    the short class's blocks; the summary says the budget ran out."""
    clock = JumpClock(0.01, when="Lk=800): 2 (Br, Bc)", by=1e3)
    t = at.autotune(budget_s=60.0, clock=clock, sizes=TINY, progress=clock.progress,
                    save=False)
    assert clock.by == 0.0  # the leap happened
    assert set(t.blocks[16]) == {0}
    assert t.measured["prefill blocks D=16 Lk>=0"] and not t.measured["prefill blocks D=16 Lk>=768"]
    assert t.blocks_for(16, 800) == t.blocks_for(16, 100) == t.blocks[16][0]
    assert not t.complete
    assert "the time budget ran out before every candidate was timed" in tuning.summary(t)["text"]


def test_classes_whose_calls_cost_4x_more_get_as_many_rounds(store, monkeypatch):
    """The prefill stage shares its time by what a round of each class costs: on a clock
    where a call takes time in proportion to H Lq Lk, the long class (4x the work per call)
    gets as many rounds as the short one (by the square root of the work, about half as
    many), and fewer than MAX_ROUNDS (the budget, not the cap, decides)."""
    clock = FakeClock(1e-6)

    def fake_call(q, k, v, **kw):  # q [1, H, Lq, D], k [1, H, Lk, D]
        clock.t += q.shape[1] * q.shape[2] * k.shape[2] * 1e-6

    monkeypatch.setattr(at, "streaming_attention", fake_call)
    sizes = dataclasses.replace(TINY, decode=(), chunk=(),
                                prefill=((4, 100, 100), (1, 100, 1600)),
                                blocks=((0, ((32, 32), (64, 32))), (768, ((64, 64),))))
    t = at.autotune(budget_s=3.0, clock=clock, sizes=sizes, save=False)
    rounds = {kind: {r["rounds"][0] for r in rec.values()} for kind, rec in t.measured.items()
              if kind.startswith("prefill")}
    (short,), (long,) = rounds["prefill blocks D=16 Lk>=0"], rounds["prefill blocks D=16 Lk>=768"]
    assert 3 <= long <= short <= long + 1 < at.MAX_ROUNDS, rounds


def test_a_leap_in_the_first_runs_leaves_the_classes_not_reached_untuned(store):
    """The first runs have half the prefill stage's time: when the budget runs out during
    them, the classes whose first runs never ran are not stored (nor their defaults); with
    no time left for rounds, none is."""
    clock = JumpClock(0.01, when="Lk=800): 2 (Br, Bc), a first run of each", by=1e3)
    t = at.autotune(budget_s=60.0, clock=clock, sizes=TINY, progress=clock.progress,
                    save=False)
    assert not t.blocks and not t.complete
    assert not t.measured["prefill blocks D=16 Lk>=768"]


def test_custom_sizes_need_no_candidates_for_the_short_class(store):
    """Sizes whose candidate lists start above the short class race its default alone."""
    sizes = dataclasses.replace(TINY, blocks=((768, ((64, 64),)),))
    t = at.autotune(budget_s=60.0, clock=FakeClock(0.01), sizes=sizes, save=False)
    assert t.blocks[16][0] == tuning.BUILTIN_BLOCKS[16]
    assert list(t.measured["prefill blocks D=16 Lk>=0"]) == ["128x128"]


def _causal_pairs(H, Lq, Lk):
    return H * (Lq * (Lk - Lq) + Lq * (Lq + 1) // 2)  # bottom-right causal


def test_one_thread_races_problems_of_less_work(store):
    """On one thread (the timing panel's default) the autotune races ``ONE_THREAD``'s
    prefills, each in the same length class as the full one it stands for, with at most
    3/4 of its work."""
    lines: list[str] = []
    n = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        at.autotune(budget_s=0.3, clock=FakeClock(0.01), progress=lines.append, save=False)
    finally:
        numba.set_num_threads(n)
    for (H, Lq, Lk), full in zip(at.ONE_THREAD.prefill, at.FULL.prefill, strict=True):
        assert any(f"(H={H} Lq={Lq} Lk={Lk})" in s for s in lines), (H, Lq, Lk)
        assert tuning.lk_class(Lk) == tuning.lk_class(full[2])
        assert _causal_pairs(H, Lq, Lk) <= 0.75 * _causal_pairs(*full)


def test_decode_tiles_the_budget_left_unmeasured_are_not_stored(store):
    """With the budget gone as the decode race starts, no decode entry is stored (not even
    the default), so the decode keeps the prefill's KV block."""
    clock = JumpClock(0.01, when="KV block x BLAS or loops per product", by=1e3)
    t = at.autotune(budget_s=60.0, clock=clock, sizes=TINY, progress=clock.progress,
                    save=False)
    assert clock.by == 0.0 and not t.decode and not t.complete
    assert t.decode_for(16) == (t.blocks_for(16)[1], tuning.BUILTIN_DECODE_LOOPS)
