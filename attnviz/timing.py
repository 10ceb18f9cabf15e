"""Live timing of the Numba kernels: standard vs streaming, sweeps over L and over block sizes.

Rules every number here follows (docs/DESIGN.md §3, "Timing methodology"):

* the kernels are the ones users call (``kernels.standard_attention`` /
  ``streaming_attention``), timed by ``attnviz.sampling.measure_side_by_side``: warm-up
  excluded, timeit-style autorange, several samples taken in turns (standard, streaming,
  standard, ...) so that a burst of load falls on both, warm-up outliers dropped, min and
  median with the spread and the number of samples;
* **threads**: 1 (clean scaling) or all, set with ``numba.set_num_threads`` in the timing
  thread (the setting is per calling thread) and restored after (``sampling.using_threads``);
* other processes' CPU use during the samples comes from ``/proc/stat``
  (``attnviz.contention``), so the panel can say when the machine was busy;
* GFLOP/s counts 4 D FLOPs per visible (query, key) pair (``stats.attention_flops``), the same
  for both methods, so it compares time for the same useful work;
* memory: each method's peak resident memory above the level before the call, measured in a
  fresh subprocess (``attnviz.bench.memprobe``, as the bench does), beside what the memory
  model (``attnviz.memory``, the Memory tab's) predicts for it.

Budgets keep a click from running for minutes or exhausting memory: ``refusal`` names the
reason a size is not run at all, from its shapes alone, before any array exists; the standard
method gets a ``max_bytes`` its own memory guard must stay below (its MemoryError becomes a
skipped entry). Sweeps are generators: the caller may stop between points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from kernels import decode_block, default_blocks, standard_attention, streaming_attention

from . import memory
from .contention import cpu_snapshot, other_cores
from .masks import packed_doc_ids
from .sampling import MEASURE_BUDGET_S, TARGET_SAMPLE_S, Samples, measure_side_by_side
from .scenarios import generate
from .stats import attention_flops, visible_pairs

MAX_FLOPS_PER_CALL = 4e10  # ~1 s streaming / ~3 s standard on this project's 2 cores
MAX_INPUT_BYTES = 2**30  # q, k, v and O together
STANDARD_MAX_BYTES_CAP = 2 * 2**30  # the standard S matrix, at most (and <= RAM / 4)


# --- the problem -------------------------------------------------------------------------------

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
    def shape(self) -> memory.Shape:
        return memory.Shape(self.B, self.Hq, self.Hkv, self.Lq, self.Lk, self.D)

    @property
    def blocks(self) -> tuple[int, int]:
        """(Br, Bc) the streaming kernel uses: the given ones or its defaults for D (decode,
        Lq == 1, has its own KV block)."""
        Br, Bc = default_blocks(self.D, self.Lk)
        if self.Lq == 1:
            Bc = decode_block(self.D)
        return self.Br or Br, self.Bc or Bc

    @property
    def split(self) -> tuple[int, int]:
        """How the decode path cuts the visible keys of each KV head: (KV tiles per chunk,
        chunks C), asked of the kernel (``kernels.decode_split``) with this call's blocks and
        whole mask; (1, 1) in prefill. Call on the thread that times: C follows its thread
        count."""
        if self.Lq != 1:
            return 1, 1
        from kernels import decode_split

        extra = self._extra_masks()
        return decode_split(self.B, self.Hkv, self.Lk, self.blocks[1], causal=self.causal,
                            q_offset=self.Lk - 1 if self.q_offset is None else self.q_offset,
                            window=self.window or 0, sinks=extra.get("sinks", 0),
                            prefix=extra.get("prefix", 0), doc_ids=extra.get("doc_ids"))

    @property
    def chunks(self) -> int:
        """The chunks per KV head the decode path cuts the visible keys into; 1 in prefill."""
        return self.split[1]

    @property
    def flops(self) -> int:
        pairs = visible_pairs(self.Lq, self.Lk, causal=self.causal, q_offset=self.q_offset,
                              window=self.window, **self._extra_masks())
        return attention_flops(pairs, self.D, self.B, self.Hq)

    @property
    def input_bytes(self) -> int:
        return 4 * self.B * self.D * (2 * self.Hq * self.Lq + 2 * self.Hkv * self.Lk)


@dataclass(frozen=True)
class Refusal:
    """Why a method did not run: ``kind`` "size" (inputs over the memory budget), "time"
    (over the per-call FLOP budget) or "memory" (standard's own guard on its S matrix)."""

    kind: str
    reason: str


def refusal(p: Problem) -> Refusal | None:
    """Why ``p`` is too big to time from the app, or None; from the shapes alone (no array
    is allocated: a refused configuration answers at once)."""
    S = memory.scores_bytes(p.shape)
    standard_S = f"; standard's score matrix S alone would need {memory.bytes_label(S)}"
    if p.input_bytes > MAX_INPUT_BYTES:
        return Refusal("size", f"inputs and output need {memory.bytes_label(p.input_bytes)} "
                               f"(> {MAX_INPUT_BYTES / 2**30:.0f} GiB budget){standard_S}")
    if p.flops > MAX_FLOPS_PER_CALL:
        return Refusal("time", f"{p.flops / 1e9:.0f} GFLOP per call (> "
                               f"{MAX_FLOPS_PER_CALL / 1e9:.0f} GFLOP budget: it would take "
                               f"too long here){standard_S}")
    return None


def budget_refusal(p: Problem) -> str | None:
    """``refusal``'s reason as text, or None."""
    r = refusal(p)
    return r.reason if r else None


def standard_max_bytes(ram: int) -> int:
    """The memory guard handed to standard_attention from the app."""
    return min(STANDARD_MAX_BYTES_CAP, ram // 4)


def inputs_for(p: Problem, scenario: str, seed: int):
    """q, k, v for ``p`` from a scenario (the traced head is head 0 of these)."""
    return generate(scenario, p.Lq, p.Lk, p.D, seed=seed, B=p.B, Hq=p.Hq, Hkv=p.Hkv)


# --- one method, both methods ---------------------------------------------------------------------

@dataclass
class Run:
    """One method on one problem: samples, GFLOP/s, peak bytes (measured, model), load."""

    method: str
    samples: Samples | None = None
    gflops: float | None = None
    peak_bytes: int | None = None  # measured in a fresh process, above the level before
    model_bytes: int | None = None  # attnviz.memory's prediction for the same call
    memory_note: str = ""
    skipped: str | None = None  # why it did not run
    skip_kind: str | None = None  # Refusal.kind
    other_cores: float | None = None  # other processes' CPU use while sampling, in cores

    @property
    def median_s(self) -> float | None:
        return self.samples.median if self.samples else None

    @property
    def min_s(self) -> float | None:
        return self.samples.min if self.samples else None

    @property
    def times(self) -> list[float]:
        return list(self.samples.times) if self.samples else []


CLOSE = 1.05  # ratios below this are within the run-to-run noise of a shared machine


def verdict(standard: Run, streaming: Run) -> str | None:
    """Which method was faster, in one sentence: the ratio of the mins (the least disturbed
    samples) and of the medians. Too close to call when either is within ``CLOSE`` or the
    two disagree; None when a method did not run."""
    if None in (standard.min_s, streaming.min_s, standard.median_s, streaming.median_s):
        return None
    by_min = standard.min_s / streaming.min_s  # > 1: streaming faster
    by_median = standard.median_s / streaming.median_s
    close = min(max(r, 1 / r) for r in (by_min, by_median)) < CLOSE
    if close or (by_min > 1) != (by_median > 1):
        return (f"Too close to call here: standard took {by_min:.2f}x streaming's time by "
                f"the min and {by_median:.2f}x by the median.")
    fast, slow = ("Streaming", "standard") if by_min > 1 else ("Standard", "streaming")
    r_min, r_median = (by_min, by_median) if by_min > 1 else (1 / by_min, 1 / by_median)
    return (f"{fast} is {r_min:.2f}x faster than {slow} here by the min ({r_median:.2f}x by "
            "the median).")


def time_calls(fns: dict, *, repeats: int, flops: int, check=None,
               target_s: float = TARGET_SAMPLE_S,
               budget_s: float = MEASURE_BUDGET_S) -> dict[str, Run]:
    """method -> Run: ``measure_side_by_side`` on the methods' calls (their samples taken in
    turns), other processes' CPU use sampled around them; GFLOP/s from each median."""
    cpu0 = cpu_snapshot()
    samples = measure_side_by_side(fns, repeats=repeats, check=check, target_s=target_s,
                                   budget_s=budget_s)
    load = other_cores(cpu0, cpu_snapshot())
    return {m: Run(m, s, flops / s.median / 1e9 if s.median > 0 else None, other_cores=load)
            for m, s in samples.items()}


def _skipped(method: str, r: Refusal) -> Run:
    return Run(method, skipped=r.reason, skip_kind=r.kind)


def compare(p: Problem, q, k, v, *, repeats: int, ram: int, check=None,
            target_s: float = TARGET_SAMPLE_S, budget_s: float = MEASURE_BUDGET_S) -> dict:
    """Standard vs streaming on the same inputs: {"standard": Run, "streaming": Run,
    "max_abs_diff": float | None, "flops": int}."""
    flops = p.flops
    r = refusal(p)
    if r:
        return {"standard": _skipped("standard", r), "streaming": _skipped("streaming", r),
                "max_abs_diff": None, "flops": flops}
    def streaming():
        return streaming_attention(q, k, v, q_block=p.Br, kv_block=p.Bc, **p.mask_kwargs())

    def standard():
        return standard_attention(q, k, v, max_bytes=standard_max_bytes(ram),
                                  **p.mask_kwargs())

    runs, fns = {}, {"standard": standard, "streaming": streaming}
    o_str = streaming()
    try:
        diff = float(np.abs(standard() - o_str).max())
    except MemoryError as e:
        runs["standard"] = _skipped("standard", Refusal("memory", f"memory guard: {e}"))
        diff, fns = None, {"streaming": streaming}
    runs.update(time_calls(fns, repeats=repeats, flops=flops, check=check, target_s=target_s,
                           budget_s=budget_s))
    return {"standard": runs["standard"], "streaming": runs["streaming"],
            "max_abs_diff": diff, "flops": flops}


def time_problem(p: Problem, *, scenario: str, seed: int, repeats: int, ram: int,
                 check=None, **kw) -> dict:
    """``compare`` on ``p`` with inputs from a scenario, built only once the budget allows."""
    r = refusal(p)
    if r:
        return {"standard": _skipped("standard", r), "streaming": _skipped("streaming", r),
                "max_abs_diff": None, "flops": p.flops}
    q, k, v = inputs_for(p, scenario, seed)
    return compare(p, q, k, v, repeats=repeats, ram=ram, check=check, **kw)


# --- memory, in a fresh process --------------------------------------------------------------

def model_bytes(p: Problem, method: str, threads: int) -> int:
    """The memory model's extra bytes (``attnviz.memory``, the Memory tab's) for one call."""
    s = p.shape
    if method == "standard":
        return memory.standard_bytes(s)
    Br, Bc = p.blocks
    return memory.streaming_bytes(s, Br, Bc, threads, p.chunks)


def measure_memory(p: Problem, runs: dict[str, Run], threads: int, *, ram: int,
                   timeout_s: float = 120.0) -> None:
    """Fill ``peak_bytes`` / ``model_bytes`` / ``memory_note`` of the methods that ran: one
    fresh subprocess per method (``attnviz.bench.memprobe``: inputs allocated and kernels
    warm before the peak is reset, so only the call's own memory counts)."""
    from .bench.cases import Case
    from .bench.memprobe import peak_memory

    case = Case("custom", p.B, p.Hq, p.Hkv, p.Lq, p.Lk, p.D, causal=p.causal,
                q_offset=p.q_offset, window=p.window or 0)
    names = {"standard": "numba_standard", "streaming": "numba_streaming"}
    for method, run in runs.items():
        if run.skipped:
            continue
        run.model_bytes = model_bytes(p, method, threads)
        if method == "standard" and memory.standard_bytes(p.shape) > standard_max_bytes(ram):
            run.memory_note = "not probed (above the app's memory guard)"
            continue
        Br, Bc = (p.Br, p.Bc) if method == "streaming" else (None, None)
        got = peak_memory([case], names[method], q_block=Br, kv_block=Bc, threads=threads,
                          timeout_s=timeout_s)[0]
        if "extra_bytes" in got:
            run.peak_bytes, run.memory_note = got["extra_bytes"], "fresh process, " + got["method"]
        else:
            run.memory_note = got.get("refused") or got.get("error", "probe failed")


# --- sweeps ------------------------------------------------------------------------------------

def sweep_lengths(problem_at, Ls, *, scenario: str, seed: int, repeats: int, ram: int,
                  check=None, **kw) -> Iterator[dict]:
    """For each L: time both methods on ``problem_at(L)``; yields one row per L:
    {L, flops, max_abs_diff, and per method m: m_s (median), m_min_s, m_spread, m_n,
    m_gflops, m_skipped, m_skip_kind, m_other_cores}."""
    for L in Ls:
        p = problem_at(L)
        res = time_problem(p, scenario=scenario, seed=seed, repeats=repeats, ram=ram,
                           check=check, **kw)
        row = {"L": L, "flops": p.flops, "max_abs_diff": res["max_abs_diff"], "problem": p}
        for m in ("standard", "streaming"):
            run = res[m]
            row[f"{m}_s"] = run.median_s
            row[f"{m}_min_s"] = run.min_s
            row[f"{m}_spread"] = run.samples.spread if run.samples else None
            row[f"{m}_n"] = run.samples.n if run.samples else 0
            row[f"{m}_gflops"] = run.gflops
            row[f"{m}_skipped"] = run.skipped
            row[f"{m}_skip_kind"] = run.skip_kind
            row[f"{m}_other_cores"] = run.other_cores
        yield row


def sweep_blocks(p: Problem, q, k, v, Brs, Bcs, *, repeats: int, check=None,
                 **kw) -> Iterator[tuple]:
    """Streaming GFLOP/s for every (Br, Bc): yields (a, b, Run) with Br = Brs[a], Bc = Bcs[b]."""
    flops = p.flops
    for a, Br in enumerate(Brs):
        for b, Bc in enumerate(Bcs):
            def call(Br=Br, Bc=Bc):
                return streaming_attention(q, k, v, q_block=Br, kv_block=Bc, **p.mask_kwargs())

            run = time_calls({"streaming": call}, repeats=repeats, flops=flops, check=check,
                             **kw)["streaming"]
            yield a, b, run


# --- what the panel says about the machine -------------------------------------------------

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

