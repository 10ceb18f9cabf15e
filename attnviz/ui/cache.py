"""What is computed once and reused: warm kernels per server, one trace per configuration.

* ``warm``: compiles (or loads from Numba's disk cache) the kernels and the traced driver's
  jitted routines when the server starts, so no user click waits for a JIT compile.
* ``traced_head``: the trace of head 0 and its float64 oracle, keyed by the values that
  define them. ``st.cache_resource`` (not ``cache_data``) because a Trace is never mutated
  and a step click must not unpickle megabytes of it: stepping reads the cached object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from .. import warmup
from ..scenarios import one_head
from ..stats import oracle
from ..timing import machine
from ..trace import Trace, run_trace
from ..viewconfig import ViewConfig


@dataclass(frozen=True)
class TracedHead:
    trace: Trace
    O_ref: np.ndarray  # [Lq, D] float64 oracle
    lse_ref: np.ndarray  # [Lq]
    source: str | None = None  # where the inputs came from, when not a scenario (uploads)


@st.cache_resource(show_spinner="Warming up the Numba kernels (once per server)...")
def warm() -> dict:
    """Kernels and traced driver compiled or loaded; returns what the timing panel shows."""
    warmup()
    return machine()


@st.cache_resource(max_entries=16, show_spinner="Tracing every tile...")
def _traced(Lq, Lk, D, Br, Bc, causal, q_offset, window, scenario, seed) -> TracedHead:
    q, k, v = one_head(scenario, Lq, Lk, D, seed=seed)
    trace = run_trace(q, k, v, causal=causal, q_offset=q_offset, window=window,
                      q_block=Br, kv_block=Bc)
    O_ref, lse_ref = oracle(trace)
    return TracedHead(trace, O_ref, lse_ref)


def traced_head(cfg: ViewConfig) -> TracedHead:
    return _traced(cfg.Lq, cfg.Lk, cfg.D, cfg.Br, cfg.Bc, cfg.causal, cfg.q_offset,
                   cfg.window, cfg.scenario, cfg.seed)
