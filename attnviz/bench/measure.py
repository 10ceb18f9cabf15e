"""Measuring the contenders: the correctness gate, round-robin timing, peak memory.

Nothing here prints. Long-running functions take a ``progress`` callback (a function of one
string) that the CLI renders on stderr.

Method, in the order ``run_case`` applies it:

1. **Gate.** Every contender's first call on the case (untimed: the CLI has compiled or
   loaded every kernel before, but a first call still pays first-touch page faults) is
   checked against the float64 oracle -- on every row when the case is small, else on a few
   heads x a few blocks of rows (a block of rows [r0, r1) is itself an attention call with
   ``q_offset + r0``, so the oracle stays exact and cheap at L = 32768). Contenders that
   pass the sample are then compared on their *full* output with a passing Numba streaming
   result (or the first passing contender). A contender that fails either check is
   ``wrong`` and gets no time.
2. **Timing.** One more untimed call per contender sets how many calls make a sample of at
   least ``min_sample_s`` (decode calls take well under a millisecond). Then ``repeats``
   rounds; each round times every contender once, in an order rotated by one per round, so
   drift (thermal, a neighbour's job) hits all alike. The median per-call time is reported.
   The roof the case is compared with -- a 2048^3 GEMM for prefill, a read of 1 GiB for
   decode -- is timed as one more member of the same rounds: on a shared machine the roof
   itself moves by 2x within minutes, and only same-round ratios hold.
3. **Memory.** Peak extra memory of one call, in a fresh subprocess per contender: kernels
   are warmed on a tiny input first; then per case the inputs are allocated, the peak RSS is
   reset (``/proc/self/clear_refs``), the call runs, and peak minus the RSS right before
   the call is the extra memory (``memprobe.py``). Without the reset: one process per call.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from ..reference import attention_reference
from .cases import Case, attention_flops, kv_read_bytes, make_inputs
from .contenders import Contender
from .machine import GemmProbe, ReadProbe, cpu_snapshot, other_cores
from .memprobe import probe_memory

Progress = Callable[[str], None]

# Gate: max |O - O_ref| / max |O_ref| over the checked rows. float32 kernels land around 1e-6;
# a wrong mask, scale or alignment lands above 1e-2.
DEFAULT_TOL = 1e-4


def _quiet(msg: str) -> None:
    pass


# --- the correctness gate --------------------------------------------------------------------

@dataclass
class OracleSample:
    """Exact float64 outputs for some rows: O[b, h, r0:r1] == ref."""

    b: int
    h: int
    r0: int
    r1: int
    ref: np.ndarray  # [r1 - r0, D] float64


def oracle_samples(case: Case, q, k, v, *, max_full: int = 2**22, rows: int = 16
                   ) -> list[OracleSample]:
    """The oracle on every (b, h) row when B*Hq*Lq*Lk <= max_full; else on the first and
    last batch, the first, a middle and the last query head, and ``rows`` rows at the start,
    middle and end of the sequence."""
    B, Hq, Lq = case.B, case.Hq, case.Lq
    g = case.Hq // case.Hkv
    if B * Hq * Lq * case.Lk <= max_full:
        blocks = [(b, h, 0, Lq) for b in range(B) for h in range(Hq)]
    else:
        starts = sorted({0, max(0, Lq // 2 - rows // 2), max(0, Lq - rows)})
        blocks = [(b, h, r0, min(r0 + rows, Lq)) for b in sorted({0, B - 1})
                  for h in sorted({0, Hq // 2, Hq - 1}) for r0 in starts]
    samples = []
    for b, h, r0, r1 in blocks:
        mask = case.mask_kwargs()
        if case.causal:
            mask["q_offset"] = case.offset + r0  # rows r0.. sit at positions offset + r0..
        ref, _ = attention_reference(q[b, h, r0:r1], k[b, h // g], v[b, h // g], **mask)
        samples.append(OracleSample(b, h, r0, r1, ref))
    return samples


def oracle_error(out: np.ndarray, samples: list[OracleSample]) -> float:
    """max |O - O_ref| / max |O_ref| over the sampled rows; inf for NaN/Inf or a bad shape."""
    err = scale = 0.0
    for s in samples:
        got = np.asarray(out[s.b, s.h, s.r0:s.r1], np.float64)
        if got.shape != s.ref.shape or not np.isfinite(got).all():
            return math.inf
        err = max(err, float(np.abs(got - s.ref).max(initial=0.0)))
        scale = max(scale, float(np.abs(s.ref).max(initial=0.0)))
    return err / scale if scale > 0 else err


def cross_error(out: np.ndarray, pivot: np.ndarray) -> float:
    """max |O - O_pivot| / max |O_pivot| on every row (both float32, same shape)."""
    if out.shape != pivot.shape or not np.isfinite(out).all():
        return math.inf
    scale = float(np.abs(pivot).max(initial=0.0))
    err = float(np.abs(out - pivot).max(initial=0.0))
    return err / scale if scale > 0 else err


# --- results -------------------------------------------------------------------------------------

@dataclass
class Result:
    """One contender on one case. ``status``: ok, wrong, refused, skipped, error."""

    case: Case
    contender: str
    label: str
    status: str
    reason: str = ""
    oracle_err: float | None = None  # vs the float64 oracle, on the sampled rows
    oracle_rows: str = ""  # "all" or "sampled"
    cross_err: float | None = None  # vs the pivot contender, on every row
    cross_with: str = ""
    first_call_s: float | None = None  # the gate's call (JIT too, unless warmed up before)
    times_s: list[float] = field(default_factory=list)  # per-call time, one per round
    calls_per_sample: int = 1
    flops: int = 0
    kv_bytes: int = 0
    predicted_bytes: int | None = None
    measured_bytes: int | None = None
    memory_note: str = ""
    other_cores: float | None = None  # CPU other jobs took while this case was timed
    # the roofs timed in the same rounds as this case's contenders (median), if any
    roof_gflops: float | None = None
    bandwidth_gbps: float | None = None

    @property
    def median_s(self) -> float | None:
        return float(np.median(self.times_s)) if self.times_s else None

    @property
    def gflops(self) -> float | None:
        t = self.median_s
        return self.flops / t / 1e9 if t else None

    @property
    def gbps(self) -> float | None:
        """K/V bytes read per second (GB/s): meaningful for decode."""
        t = self.median_s
        return self.kv_bytes / t / 1e9 if t else None


# --- timing --------------------------------------------------------------------------------------

def _timed(call, n: int) -> float:
    """Seconds for n calls: timed here, or by the call itself when it runs elsewhere
    (``call.timed(n)``: torch in its own process, no pipe time counted)."""
    if hasattr(call, "timed"):
        return call.timed(n)
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return time.perf_counter() - t0


def time_round_robin(calls: dict[str, Callable[[], object]], *, repeats: int = 7,
                     min_repeats: int = 3, budget_s: float | None = None,
                     min_sample_s: float = 0.05, settle_s: float = 0.2,
                     known_s: dict[str, float] | None = None,
                     progress: Progress = _quiet) -> dict[str, tuple[list[float], int]]:
    """Per contender: (per-call seconds of each round, calls per sample).

    Every call here is already warm (JIT excluded). One untimed call per contender measures
    how many calls make a sample of ``min_sample_s``; a contender whose earlier call (in
    ``known_s``) took over a second skips it (one call per sample; at L = 32768 a call takes
    a minute). Rounds are cut to fit ``budget_s`` (at least ``min_repeats``); each round
    visits the contenders in an order rotated by one.
    Before each sample we sleep ``settle_s``: thread pools keep spinning after a call
    (OpenBLAS's workers for ~0.1 s), and on 2 cores a spinning pool left by the previous
    contender slowed a small Numba call here from 0.1 ms to 7 ms.
    """
    names = list(calls)
    if not names:
        return {}
    warm = {n: t for n, t in (known_s or {}).items() if n in calls and t > 1.0}
    for name in [n for n in names if n not in warm]:  # calibration call, untimed
        progress(f"warm-up {name}")
        time.sleep(settle_s)
        warm[name] = max(_timed(calls[name], 1), 1e-7)
    number = {n: max(1, math.ceil(min_sample_s / warm[n])) for n in names}
    round_s = sum(number[n] * warm[n] + settle_s for n in names)
    rounds = repeats
    if budget_s is not None:
        rounds = max(min_repeats, min(repeats, int(budget_s / round_s)))
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            progress(f"round {r + 1}/{rounds}: {name}"
                     + (f" (~{warm[name] * number[name]:.0f} s)" if warm[name] > 5 else ""))
            call, n = calls[name], number[name]
            gc.collect()
            time.sleep(settle_s)
            gc.disable()
            try:
                times[name].append(_timed(call, n) / n)
            finally:
                gc.enable()
    return {n: (times[n], number[n]) for n in names}


# --- one case, all contenders ------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    repeats: int = 7
    min_repeats: int = 3
    budget_s: float | None = 30.0  # timing time per case (all contenders), roughly
    min_sample_s: float = 0.05
    settle_s: float = 0.2  # quiet time before each sample (see time_round_robin)
    tol: float = DEFAULT_TOL
    seed: int = 0
    memory: bool = True  # peak memory in subprocesses (built-in contenders only)
    q_block: int | None = None  # streaming tile sizes for the memory probe (None: default)
    kv_block: int | None = None
    threads: int | None = None  # for the memory probe and read probe (None: all cores)
    # time the GEMM roof (prefill) or the read bandwidth (decode) in the same round-robin
    # rounds as the contenders, so that a fraction of the roof compares like with like
    roof_probes: bool = True
    roof_n: int = 2048
    read_torch: bool = False  # let torch's read compete in the read probe (``ReadProbe``)
    pivot: str = "numba_streaming"


ROOF_PROBE = "(roof probe)"  # its key among the timed calls; no contender is named so


def run_case(case: Case, contenders: list[Contender], settings: Settings | None = None,
             progress: Progress = _quiet) -> list[Result]:
    """Gate, time and (optionally) memory-probe every contender on one case."""
    settings = settings or Settings()
    q, k, v = make_inputs(case, settings.seed)
    flops, kvb = attention_flops(case), kv_read_bytes(case)
    progress("oracle")
    samples = oracle_samples(case, q, k, v)
    rows = "all" if len(samples) == case.B * case.Hq and samples[0].r1 == case.Lq else "sampled"
    results: dict[str, Result] = {}
    calls: dict[str, Callable[[], np.ndarray]] = {}
    # the pivot goes first: every later passing output is compared with it on every row,
    # then dropped (only one full output is kept at a time)
    order = sorted(contenders, key=lambda c: c.name != settings.pivot)
    pivot_name, pivot_out = None, None
    for c in order:
        res = Result(case, c.name, c.label, "ok", flops=flops, kv_bytes=kvb,
                     predicted_bytes=c.predict_bytes(case), oracle_rows=rows)
        results[c.name] = res
        skip = c.skip_reason(case)
        if skip:
            res.status, res.reason = "skipped", skip
            continue
        progress(f"gate {c.name}")
        try:
            call = c.prepare(case, q, k, v)
            t0 = time.perf_counter()
            out = call()
            res.first_call_s = time.perf_counter() - t0
        except MemoryError as e:
            res.status, res.reason = "refused", f"refused by its guard: {e}"
            continue
        except Exception as e:  # a contender that crashes is reported, not fatal
            res.status, res.reason = "error", f"{type(e).__name__}: {e}"
            continue
        res.oracle_err = oracle_error(out, samples)
        if not res.oracle_err <= settings.tol:
            res.status = "wrong"
            res.reason = f"error vs float64 oracle {res.oracle_err:.1e} > {settings.tol:.0e}"
            continue
        if rows == "sampled":  # rows the oracle did not see: compare with the pivot
            if pivot_out is None:
                pivot_name, pivot_out = c.name, out
            else:
                res.cross_err, res.cross_with = cross_error(out, pivot_out), pivot_name
                if not res.cross_err <= settings.tol:
                    res.status = "wrong"
                    res.reason = (f"differs from {pivot_name} by {res.cross_err:.1e} "
                                  f"> {settings.tol:.0e}")
                    continue
        calls[c.name] = call
        del out
    del pivot_out
    calls = {c.name: calls[c.name] for c in contenders if c.name in calls}  # caller's order
    probe = None
    if settings.roof_probes and calls:
        # decode: the fastest read of the case's own K and V (the bytes the kernels read)
        probe = (ReadProbe(threads=settings.threads, torch=settings.read_torch, arrays=(k, v))
                 if case.Lq == 1 else GemmProbe(settings.roof_n))
        calls[ROOF_PROBE] = probe
    cpu0 = cpu_snapshot()
    try:
        timed = time_round_robin(calls, repeats=settings.repeats,
                                 min_repeats=settings.min_repeats, budget_s=settings.budget_s,
                                 min_sample_s=settings.min_sample_s, settle_s=settings.settle_s,
                                 known_s={n: results[n].first_call_s for n in results
                                          if results[n].first_call_s}, progress=progress)
    finally:
        if isinstance(probe, ReadProbe):
            probe.close()
    load = other_cores(cpu0, cpu_snapshot())
    roof = bandwidth = None
    if probe is not None:
        t = float(np.median(timed.pop(ROOF_PROBE)[0]))
        if isinstance(probe, ReadProbe):
            bandwidth = probe.nbytes / t / 1e9
        else:
            roof = probe.flops / t / 1e9
    for name, (times, number) in timed.items():
        res = results[name]
        res.times_s, res.calls_per_sample, res.other_cores = times, number, load
        res.roof_gflops, res.bandwidth_gbps = roof, bandwidth
    del calls, q, k, v
    gc.collect()
    if settings.memory:
        probe_memory(list(results.values()), settings, progress)
    return [results[c.name] for c in contenders]  # in the caller's order


def run_suite(cases: list[Case], contenders: list[Contender], settings: Settings | None = None,
              progress: Progress = _quiet) -> list[Result]:
    """``run_case`` over every case, one after the other; then the peak-memory probes, one
    fresh subprocess per contender."""
    settings = settings or Settings()
    results = []
    timing_only = replace(settings, memory=False)
    for i, case in enumerate(cases):
        def case_progress(msg, i=i, case=case):
            progress(f"[{i + 1}/{len(cases)}] {case.label}: {msg}")

        results += run_case(case, contenders, timing_only, case_progress)
    if settings.memory:
        probe_memory(results, settings, progress)
    return results
