"""Live timing of the Numba kernels: standard vs streaming, sweeps over L and over block sizes.

Rules every number here follows:
* the kernels are the ones users call (``kernels.standard_attention`` /
  ``streaming_attention``); two warm-up calls precede the timed ones and are not counted;
* a time is the median of ``repeats`` samples (``time.perf_counter``), a sample being one
  call or, for calls under ``MIN_SAMPLE_S``, the mean of enough back-to-back calls;
* GFLOP/s counts 4 D FLOPs per visible (query, key) pair (``stats.attention_flops``), the same
  for both methods, so it compares time for the same useful work;
* memory: the peak resident memory above the level before the call, read from Linux's
  high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``). It is per process:
  other work in the same server adds to it. None where the kernel cannot reset it.

Budgets keep a click from running for minutes or exhausting memory: ``budget_refusal``
names the reason a size is not run at all, and the standard method gets a ``max_bytes``
below which its own memory guard must stay (its MemoryError becomes a "skipped" entry).
Sweeps are generators: the caller draws progress after each point and may stop early.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from kernels import standard_attention, streaming_attention

from .masks import packed_doc_ids
from .rss import peak_extra_bytes
from .scenarios import generate
from .stats import attention_flops, visible_pairs

MIN_SAMPLE_S = 0.05  # shorter calls are repeated within one timed sample
MAX_FLOPS_PER_CALL = 4e10  # ~1 s streaming / ~3 s standard on this project's 2 cores
MAX_INPUT_BYTES = 2**30  # q, k, v and O together
STANDARD_MAX_BYTES_CAP = 2 * 2**30  # the standard S matrix, at most (and <= RAM / 4)


@dataclass(frozen=True)
class Problem:
    """One attention call to time: shapes, mask and blocks."""

    B: int
    Hq: int
    Hkv: int
    Lq: int
    Lk: int
    D: int
    causal: bool = True
    q_offset: int | None = None
    window: int | None = None
    Br: int | None = None
    Bc: int | None = None
    sinks: int = 0  # the masks of real models (0 / None: unused), as ViewConfig has them
    prefix: int = 0
    docs: int = 0  # packed documents of equal length
    sink_logit: float | None = None  # the same for every head

    def mask_kwargs(self) -> dict:
        kw = {"causal": self.causal, "q_offset": self.q_offset, "window": self.window}
        kw.update(self._extra_masks())
        if self.sink_logit is not None:
            kw["sink_logits"] = np.full(self.Hq, self.sink_logit, np.float32)
        return kw

    def _extra_masks(self) -> dict:
        kw = {}
        if self.sinks:
            kw["sinks"] = min(self.sinks, self.Lk)
        if self.prefix:
            kw["prefix"] = min(self.prefix, self.Lk)
        if self.docs:
            kw["doc_ids"] = packed_doc_ids(self.Lk, self.docs)
        return kw

    @property
    def flops(self) -> int:
        pairs = visible_pairs(self.Lq, self.Lk, causal=self.causal, q_offset=self.q_offset,
                              window=self.window, **self._extra_masks())
        return attention_flops(pairs, self.D, self.B, self.Hq)

    @property
    def input_bytes(self) -> int:
        return 4 * self.B * self.D * (2 * self.Hq * self.Lq + 2 * self.Hkv * self.Lk)


@dataclass
class Run:
    """One method on one problem: median seconds, all timed runs, GFLOP/s, peak bytes."""

    method: str
    median_s: float | None = None
    times: list[float] = field(default_factory=list)
    gflops: float | None = None
    peak_bytes: int | None = None
    skipped: str | None = None  # why it did not run


def budget_refusal(p: Problem) -> str | None:
    """Why ``p`` is too big to time from the app, or None."""
    if p.input_bytes > MAX_INPUT_BYTES:
        return (f"inputs and output need {p.input_bytes / 2**30:.2f} GiB "
                f"(> {MAX_INPUT_BYTES / 2**30:.0f} GiB budget)")
    if p.flops > MAX_FLOPS_PER_CALL:
        return (f"{p.flops / 1e9:.0f} GFLOP per call (> {MAX_FLOPS_PER_CALL / 1e9:.0f} GFLOP "
                "budget: it would take too long here)")
    return None


def standard_max_bytes(ram: int) -> int:
    """The memory guard handed to standard_attention from the app."""
    return min(STANDARD_MAX_BYTES_CAP, ram // 4)


def time_call(method: str, fn, repeats: int, flops: int):
    """(last output, Run): two untimed calls (the first records its peak memory, the second
    sets the sample size), then the median of ``repeats`` samples. A sample is one call, or
    as many back-to-back calls as make ``MIN_SAMPLE_S`` (then divided by their number): a
    sub-millisecond decode call is not timed against the clock's and the scheduler's noise."""
    out, peak = peak_extra_bytes(fn)
    # calibrate on a second call: the first also pays the memory probe and, after idle, the
    # wake-up of the worker threads (~6 ms here), which would make a 0.2 ms call look slow
    t0 = time.perf_counter()
    out = fn()
    calls = max(1, min(1000, math.ceil(MIN_SAMPLE_S / max(time.perf_counter() - t0, 1e-9))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            out = fn()
        times.append((time.perf_counter() - t0) / calls)
    med = statistics.median(times)
    return out, Run(method, med, times, flops / med / 1e9 if med > 0 else None, peak)


def compare(p: Problem, q, k, v, *, repeats: int, ram: int) -> dict:
    """Standard vs streaming on the same inputs: {"standard": Run, "streaming": Run,
    "max_abs_diff": float | None, "flops": int}."""
    flops = p.flops
    refusal = budget_refusal(p)
    if refusal:
        return {"standard": Run("standard", skipped=refusal),
                "streaming": Run("streaming", skipped=refusal), "max_abs_diff": None,
                "flops": flops}
    o_str, streaming = time_call(
        "streaming", lambda: streaming_attention(q, k, v, q_block=p.Br, kv_block=p.Bc,
                                                 **p.mask_kwargs()), repeats, flops)
    try:
        o_std, standard = time_call(
            "standard", lambda: standard_attention(q, k, v, max_bytes=standard_max_bytes(ram),
                                                   **p.mask_kwargs()), repeats, flops)
        diff = float(np.abs(o_std - o_str).max())
    except MemoryError as e:
        standard, diff = Run("standard", skipped=f"memory guard: {e}"), None
    return {"standard": standard, "streaming": streaming, "max_abs_diff": diff, "flops": flops}


def inputs_for(p: Problem, scenario: str, seed: int):
    """q, k, v for ``p`` from a scenario (the traced head is head 0 of these)."""
    return generate(scenario, p.Lq, p.Lk, p.D, seed=seed, B=p.B, Hq=p.Hq, Hkv=p.Hkv)


def sweep_lengths(problem_at, Ls, *, scenario: str, seed: int, repeats: int,
                  ram: int) -> Iterator[dict]:
    """For each L: time both methods on ``problem_at(L)``; yields one row per L:
    {L, standard_s, streaming_s, standard_gflops, streaming_gflops, standard_skipped,
    streaming_skipped, max_abs_diff}."""
    for L in Ls:
        p = problem_at(L)
        refusal = budget_refusal(p)
        if refusal:
            res = {"standard": Run("standard", skipped=refusal),
                   "streaming": Run("streaming", skipped=refusal), "max_abs_diff": None}
        else:
            res = compare(p, *inputs_for(p, scenario, seed), repeats=repeats, ram=ram)
        row = {"L": L, "max_abs_diff": res["max_abs_diff"]}
        for m in ("standard", "streaming"):
            run = res[m]
            row[f"{m}_s"] = run.median_s
            row[f"{m}_gflops"] = run.gflops
            row[f"{m}_skipped"] = run.skipped
            row[f"{m}_peak_bytes"] = run.peak_bytes
        yield row


def sweep_blocks(p: Problem, q, k, v, Brs, Bcs, *, repeats: int) -> Iterator[tuple]:
    """Streaming GFLOP/s for every (Br, Bc): yields (a, b, Run) with Br = Brs[a], Bc = Bcs[b]."""
    flops = p.flops
    for a, Br in enumerate(Brs):
        for b, Bc in enumerate(Bcs):
            def call(Br=Br, Bc=Bc):
                return streaming_attention(q, k, v, q_block=Br, kv_block=Bc, **p.mask_kwargs())

            _, run = time_call("streaming", call, repeats, flops)
            yield a, b, run


def machine() -> dict:
    """Threads, threading layer, the BLAS of the tile GEMMs and dtype the timings use."""
    import numba

    from kernels import BLAS

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet in this process
        layer = numba.config.THREADING_LAYER
    return {"threads": numba.get_num_threads(), "threading layer": layer,
            "blas": f"{BLAS.describe()}, one thread per worker ({BLAS.reason})",
            "dtype": "float32 (inputs, accumulators and outputs)"}
