"""One server, many sessions: the shared caches are bounded by bytes and evict; sessions
share one trace and keep no private copy of it (nor of its figures) in their session state."""
from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from dataclasses import replace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from attnviz.bytecache import ByteLRU, approx_bytes
from attnviz.trace import Trace
from attnviz.ui import cache
from attnviz.ui.figures import StepFigures
from attnviz.viewconfig import ViewConfig, to_query
from tests.test_app import APP, ok

MiB = 2**20


def test_approx_bytes_matches_what_a_trace_allocates():
    cfg = ViewConfig(L=700, D=48, Br=24, Bc=40, seed=5)  # ragged last blocks
    cache._trace(cache.head_key(replace(cfg, L=40)))  # jitted code loaded before measuring
    gc.collect()
    tracemalloc.start()
    head = cache._trace(cache.head_key(cfg))
    gc.collect()
    allocated, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    estimate = approx_bytes(head)
    assert allocated > 0.5 * MiB
    assert 0.85 * allocated <= estimate <= 1.15 * allocated, (estimate, allocated)


def test_approx_bytes_counts_shared_buffers_once():
    a = np.random.default_rng(0).standard_normal((256, 256))  # 512 KiB
    alone = approx_bytes(a)
    assert alone >= a.nbytes
    assert approx_bytes([a, a, a[:10], a.T]) < alone + 4096  # views and repeats: headers


def test_byte_lru_evicts_least_recently_used_by_bytes():
    rng = np.random.default_rng(1)
    made = []

    def make(name):
        made.append(name)
        return rng.standard_normal(MiB // 8)  # 1 MiB of float64

    lru = ByteLRU(max_bytes=3 * MiB + 3 * 4096)
    for name in "abc":
        lru.get(name, lambda name=name: make(name))
    lru.get("a", lambda: make("a"))  # a hit: "a" becomes the most recent
    lru.get("d", lambda: make("d"))  # 4 MiB > bound: evicts "b", the least recent
    s = lru.stats()
    assert made == list("abcd")
    assert s.entries == 3 and s.evictions == 1 and s.bytes <= s.max_bytes
    assert "b" not in lru and all(k in lru for k in "acd")
    lru.get("b", lambda: make("b"))  # made again
    assert made == list("abcdb") and "c" not in lru and lru.stats().bytes <= s.max_bytes


def test_byte_lru_keeps_the_newest_entry_even_when_it_alone_is_over_the_bound():
    lru = ByteLRU(max_bytes=1000)
    lru.get("small", lambda: np.zeros(10))
    big = lru.get("big", lambda: np.zeros(10_000))
    assert lru.get("big", lambda: pytest.fail("recomputed")) is big
    assert "small" not in lru and lru.stats().entries == 1


def test_byte_lru_makes_a_missing_key_once_for_concurrent_callers():
    lru = ByteLRU(max_bytes=MiB)
    calls = []
    start = threading.Barrier(8)
    got = []

    def make():
        calls.append(1)
        time.sleep(0.2)  # long enough for every thread to arrive while it is being made
        return np.arange(100)

    def ask():
        start.wait()
        got.append(lru.get("k", make))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(got) == 8 and all(x is got[0] for x in got)


def test_byte_lru_rejects_a_bad_bound():
    with pytest.raises(ValueError, match="max_bytes must be an integer >= 0, got -1"):
        ByteLRU(-1)


@pytest.mark.parametrize("raw", ["0", "lots", "-5"])
def test_cache_budget_from_the_environment_names_the_variable(monkeypatch, raw):
    monkeypatch.setenv("ATTNVIZ_TRACE_CACHE_MB", raw)
    with pytest.raises(ValueError, match=f"ATTNVIZ_TRACE_CACHE_MB .* got '{raw}'"):
        cache.budget_bytes("ATTNVIZ_TRACE_CACHE_MB", 256)
    monkeypatch.setenv("ATTNVIZ_TRACE_CACHE_MB", "7")
    assert cache.budget_bytes("ATTNVIZ_TRACE_CACHE_MB", 256) == 7 * MiB


def test_at_most_two_traces_are_built_at_once(monkeypatch):
    running, most = [], []
    lock = threading.Lock()
    real = cache.run_trace

    def counted(*args, **kwargs):  # the real run_trace, counting who runs it at once
        with lock:
            running.append(1)
            most.append(len(running))
        try:
            time.sleep(0.1)
            return real(*args, **kwargs)
        finally:
            with lock:
                running.pop()

    monkeypatch.setattr(cache, "run_trace", counted)
    keys = [cache.head_key(ViewConfig(L=200 + s, seed=77 + s)) for s in range(6)]
    heads = [None] * len(keys)

    def build(s):
        heads[s] = cache._trace(keys[s])

    threads = [threading.Thread(target=build, args=(s,)) for s in range(len(keys))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(most) == cache.TRACE_BUILDS == 2
    assert [h.trace.config.Lq for h in heads] == [200 + s for s in range(6)]


# --- the app: AppTest sessions against the server's caches -----------------------------------

def _session(cfg: ViewConfig) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(to_query(cfg))
    return ok(at.run())


@pytest.fixture
def fresh_caches():
    """New server caches for the test (read the environment again), and after it."""
    cache.caches.clear()
    yield
    cache.caches.clear()


def test_the_app_evicts_traces_beyond_the_byte_bound(fresh_caches, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_TRACE_CACHE_MB", "2")
    cfgs = [ViewConfig(L=512, D=64, Br=32, Bc=64, seed=1000 + s) for s in range(4)]
    size = approx_bytes(cache._trace(cache.head_key(cfgs[0])))
    assert 0.6 * MiB < size < 1.0 * MiB  # so that two fit in 2 MiB, and three do not
    for cfg in cfgs:
        _session(cfg)
    traces = cache.caches().traces
    s = traces.stats()
    assert s.max_bytes == 2 * MiB and s.bytes <= s.max_bytes
    assert s.entries == 2 and s.evictions == 2 and s.misses == 4
    assert cache.head_key(cfgs[0]) not in traces and cache.head_key(cfgs[3]) in traces
    at = _session(cfgs[0])  # evicted: traced again, and shown
    assert traces.stats().misses == 5 and cache.head_key(cfgs[0]) in traces
    assert at.session_state["L"] == 512 and at.session_state["seed"] == 1000


def _private_objects(obj, limit: int = 64 * 1024) -> list[str]:
    """What in ``obj`` (walked deeply) is a trace, its figures, or an array over ``limit``."""
    found, seen, stack = [], set(), [obj]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, (Trace, cache.TracedHead, StepFigures)):
            found.append(type(x).__name__)
        elif isinstance(x, np.ndarray) and x.nbytes > limit:
            found.append(f"ndarray {x.shape}")
        elif isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple, set)):
            stack.extend(x)
    return found


def test_sessions_share_one_trace_and_keep_no_private_copy(fresh_caches):
    cfg = ViewConfig(L=1024, D=64, Br=32, Bc=64, seed=4242)  # a 64-step trace of ~3 MiB
    sessions = [_session(cfg) for _ in range(3)]
    for at in sessions:
        at.button(key="next").click().run()
        at.button(key="next").click().run()
        assert ok(at).session_state["step"] == 2
    traces, figures = cache.caches().traces, cache.caches().figures
    assert traces.stats().misses == 1 and traces.stats().entries == 1  # traced once
    head = traces.get(cache.head_key(cfg), lambda: pytest.fail("not cached"))
    assert approx_bytes(head) > 2 * MiB
    # each step's figures were drawn once for all three sessions
    assert figures.stats().hits >= 2 * 3
    for at in sessions:
        state = at.session_state.to_dict()
        assert not _private_objects(state), _private_objects(state)
        assert approx_bytes(state) < 256 * 1024
    # and stepping on does not change that, in another configuration either
    at = sessions[0]
    at.query_params.clear()
    at.selectbox(key="preset").set_value("seed's 32x64 blocks").run()
    at.button(key="last").click().run()
    assert not _private_objects(ok(at).session_state.to_dict())
