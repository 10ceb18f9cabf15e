"""What is computed once per server and shared by every session: warm kernels, traces,
the step view's figures.

* ``warm``: compiles (or loads from Numba's disk cache) the kernels and the traced driver's
  jitted routines when the server starts, so no user click waits for a JIT compile.
* ``traced_head``: the trace of head 0 and its float64 oracle, keyed by the values that
  define them. Shared objects, not copies (``st.cache_data`` would unpickle megabytes per
  step click): a Trace is never mutated, and stepping reads the cached object.
* ``figures``: the cache of the step view's figures (``ui.figures``), a pure function of the
  trace and the step, so that a class walking the same preset draws each step once.

Both caches are ``bytecache.ByteLRU``s bounded by bytes (a trace is 0.1 to ~43 MiB, a
step's figures ~0.3 MiB): ``ATTNVIZ_TRACE_CACHE_MB`` (default 256) and
``ATTNVIZ_FIGURE_CACHE_MB`` (default 128), read once per server (at its first page view).
Sessions keep keys, never the cached values, in their session state (see
``tests/test_serving.py``).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Hashable
from dataclasses import dataclass, replace

import numpy as np
import streamlit as st

from kernels import tile_products

from .. import warmup
from ..bytecache import ByteLRU
from ..scenarios import one_head
from ..stats import oracle
from ..timing import machine
from ..trace import Trace, run_trace
from ..viewconfig import ViewConfig

TRACE_CACHE_MB, FIGURE_CACHE_MB = 256, 128  # defaults of the two budgets
# Traces built at once, server-wide: a build holds about twice the trace it makes (up to
# ~85 MiB at the largest grid) and runs on the GIL, so a class asking for 20 new traces at
# once gains nothing from 20 parallel builds but their memory. The others wait their turn.
TRACE_BUILDS = 2
build_slots = threading.BoundedSemaphore(TRACE_BUILDS)  # held while a trace is built


@dataclass(frozen=True)
class TracedHead:
    key: Hashable  # what defines it: head_key(cfg), or an upload's content hash and view
    trace: Trace
    O_ref: np.ndarray  # [Lq, D] float64 oracle
    lse_ref: np.ndarray  # [Lq]
    source: str | None = None  # where the inputs came from, when not a scenario (uploads)


@st.cache_resource(show_spinner="Warming up the Numba kernels (once per server)...")
def warm() -> dict:
    """Kernels and traced driver compiled or loaded; returns what the timing panel shows.
    The server never tunes (a first page view would wait ~20 s): it reads the tuning that
    ``make warm`` / ``make run`` or ``python -m attnviz.bench --autotune`` stored."""
    warmup(autotune=False)
    return machine()


def budget_bytes(name: str, default_mb: int) -> int:
    """The environment variable ``name`` (MiB, an integer >= 1), in bytes."""
    raw = os.environ.get(name, str(default_mb))
    try:
        mb = int(raw)
    except ValueError:
        mb = 0
    if mb < 1:
        raise ValueError(f"{name} must be a whole number of MiB >= 1, got {raw!r}")
    return mb * 2**20


@dataclass(frozen=True)
class Caches:
    traces: ByteLRU  # TracedHead.key -> TracedHead
    figures: ByteLRU  # (kind, TracedHead.key, ...) -> what ui.figures draws


@st.cache_resource(show_spinner=False)
def caches() -> Caches:
    """The server's two caches (one per process, whichever session asks first)."""
    return Caches(ByteLRU(budget_bytes("ATTNVIZ_TRACE_CACHE_MB", TRACE_CACHE_MB)),
                  ByteLRU(budget_bytes("ATTNVIZ_FIGURE_CACHE_MB", FIGURE_CACHE_MB)))


def head_key(cfg: ViewConfig) -> tuple[ViewConfig, tuple[bool, bool]]:
    """What defines the traced head: the configuration without B, Hq, Hkv (the memory and
    timing panels' sizes), which the stepper's single head does not depend on; with the bug
    lab's ``bug`` (a buggy trace is another trace); and the tile products in force
    (``kernels.tile_products``: decode's are tuned per host, and a new tuning may arrive
    while the server runs)."""
    return replace(cfg, B=1, Hq=1, Hkv=1), tile_products(cfg.Lq, cfg.D)


def _trace(key: tuple[ViewConfig, tuple[bool, bool]]) -> TracedHead:
    cfg, loops = key  # the products the key names, not re-read: a tuning may land meanwhile
    with build_slots:
        q, k, v = one_head(cfg.scenario, cfg.Lq, cfg.Lk, cfg.D, seed=cfg.seed)
        trace = run_trace(q, k, v, q_block=cfg.Br, kv_block=cfg.Bc, bug=cfg.bug, loops=loops,
                          **cfg.mask_kwargs())
        O_ref, lse_ref = oracle(trace)
    return TracedHead(key, trace, O_ref, lse_ref)


def traced_head(cfg: ViewConfig) -> TracedHead:
    """The shared trace of ``cfg`` (computed on the first request, with a spinner)."""
    key, traces = head_key(cfg), caches().traces
    if key in traces:
        return traces.get(key, lambda: _trace(key))
    with st.spinner("Tracing every tile..."):
        return traces.get(key, lambda: _trace(key))
