"""What is computed once and reused: warm kernels per server, one trace per configuration.

* ``warm``: compiles (or loads from Numba's disk cache) the kernels and the traced driver's
  jitted routines when the server starts, so no user click waits for a JIT compile.
* ``traced_head``: the trace of head 0 and its float64 oracle, keyed by the values that
  define them. ``st.cache_resource`` (not ``cache_data``) because a Trace is never mutated
  and a step click must not unpickle megabytes of it: stepping reads the cached object.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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


@st.cache_resource(show_spinner="Warming up the Numba kernels (once per server)...")
def warm() -> dict:
    """Kernels and traced driver compiled or loaded; returns what the timing panel shows."""
    warmup()
    return machine()


@st.cache_resource(max_entries=16, show_spinner="Tracing every tile...")
def _traced(cfg: ViewConfig) -> TracedHead:
    q, k, v = one_head(cfg.scenario, cfg.Lq, cfg.Lk, cfg.D, seed=cfg.seed)
    trace = run_trace(q, k, v, q_block=cfg.Br, kv_block=cfg.Bc, **cfg.mask_kwargs())
    O_ref, lse_ref = oracle(trace)
    return TracedHead(trace, O_ref, lse_ref)


def traced_head(cfg: ViewConfig) -> TracedHead:
    # keyed by the fields that define the trace (not B, Hq, Hkv nor the unused sizes)
    return _traced(replace(cfg, B=1, Hq=1, Hkv=1))
