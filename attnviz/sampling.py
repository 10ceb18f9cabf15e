"""How one call is timed: timeit-style autorange, several samples, min and median with spread.

(docs/DESIGN.md §3, "Timing methodology".)

* one warm-up call (first touch of its output, waking the worker threads) is not counted;
* **autorange**, as Python's ``timeit``: the calls per sample grow 1, 2, 5, 10, 20, ... until
  one sample takes at least ``TARGET_SAMPLE_S``; those calibration samples are not kept;
* then up to ``repeats`` samples: at least ``MIN_SAMPLES``, fewer than ``repeats`` only when
  they overrun ``budget_s``; methods compared are sampled in turns (``measure_side_by_side``),
  so that another process's burst of load falls on both;
* leading samples slower than ``OUTLIER_RATIO`` x the median of the rest are warm-up
  outliers (a page-faulting output, a thread pool still waking) and are dropped;
* the report: the **min** (the least disturbed sample) and the **median**, with the spread
  (interquartile range over the median) and the number of samples kept.

The clock is a parameter, so the tests drive all of this with a fake one.
``using_threads`` runs the timed calls on 1 thread (clean scaling: no barrier waits, no
neighbour sharing a core) or all of them.
"""
from __future__ import annotations

import gc
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

TARGET_SAMPLE_S = 0.2  # autorange: calls per sample grow until a sample takes this long
MEASURE_BUDGET_S = 3.0  # timed samples of one method on one problem stop past this
MIN_SAMPLES = 3
OUTLIER_RATIO = 1.5  # a leading sample this much slower than the rest's median is dropped

Clock = Callable[[], float]


@dataclass(frozen=True)
class Samples:
    """Per-call seconds of the samples kept, in the order taken, and how they were taken."""

    times: tuple[float, ...]
    number: int  # calls per sample (autorange)
    dropped: tuple[float, ...] = ()  # leading warm-up outliers, per-call seconds

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """Interquartile range over the median (0.1: the middle half lies within 10%)."""
        if self.n < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.times, n=4, method="inclusive")
        return (q3 - q1) / self.median
def _sample(fn, number: int, clock: Clock) -> float:
    """Seconds for ``number`` back-to-back calls (the garbage collector paused)."""
    gc.disable()
    try:
        t0 = clock()
        for _ in range(number):
            fn()
        return clock() - t0
    finally:
        gc.enable()


def autorange(fn, *, clock: Clock = time.perf_counter, target_s: float = TARGET_SAMPLE_S,
              budget_s: float = MEASURE_BUDGET_S) -> tuple[int, float]:
    """(calls per sample, that sample's seconds), as ``timeit.Timer.autorange``: 1, 2, 5,
    10, 20, 50, ... calls until one sample takes ``target_s``; it stops growing earlier when
    the next size's sample would take more than ``budget_s``."""
    base = 1
    while True:
        for k in (1, 2, 5):
            number = k * base
            t = _sample(fn, number, clock)
            if t >= target_s:
                return number, t
            nxt = {1: 2, 2: 5, 5: 10}[k] * base
            if t / number * nxt > budget_s or number >= 10**6:
                return number, t
        base *= 10


def drop_warmup_outliers(times: list[float], *, ratio: float = OUTLIER_RATIO,
                         keep: int = MIN_SAMPLES) -> tuple[list[float], list[float]]:
    """(kept, dropped): leading samples slower than ``ratio`` x the median of the samples
    after them are warm-up, not the steady state; at least ``keep`` samples stay."""
    kept, dropped = list(times), []
    while len(kept) > keep and kept[0] > ratio * statistics.median(kept[1:]):
        dropped.append(kept.pop(0))
    return kept, dropped


def measure(fn, *, repeats: int, clock: Clock = time.perf_counter,
            target_s: float = TARGET_SAMPLE_S, budget_s: float = MEASURE_BUDGET_S,
            check: Callable[[], None] | None = None) -> Samples:
    """Warm up ``fn`` (one call), autorange, then ``repeats`` samples (at least
    ``MIN_SAMPLES``; fewer than ``repeats`` only past ``budget_s``), warm-up outliers dropped.
    ``check`` runs before every sample (it may raise to cancel)."""
    return measure_side_by_side({"": fn}, repeats=repeats, clock=clock, target_s=target_s,
                                budget_s=budget_s, check=check)[""]


def measure_side_by_side(fns: dict[str, Callable[[], object]], *, repeats: int,
                         clock: Clock = time.perf_counter, target_s: float = TARGET_SAMPLE_S,
                         budget_s: float = MEASURE_BUDGET_S,
                         check: Callable[[], None] | None = None) -> dict[str, Samples]:
    """``measure`` for several functions at once, their samples taken in turns.

    Each function is warmed up and autoranged on its own; then round after round every
    function takes one sample (A, B, A, B, ...), so a burst of load from another process
    falls on both methods of a comparison instead of on whichever was being timed then: on a
    shared machine their ratio holds far better than their times. Rounds stop as ``measure``
    stops, the budget counted per function; warm-up outliers are dropped per function."""
    number = {}
    for name, fn in fns.items():
        fn()
        number[name], _ = autorange(fn, clock=clock, target_s=target_s, budget_s=budget_s)
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = clock()
    for r in range(1, max(repeats, MIN_SAMPLES) + 1):
        for name, fn in fns.items():
            if check:
                check()
            times[name].append(_sample(fn, number[name], clock) / number[name])
        if r >= MIN_SAMPLES and clock() - start >= budget_s * len(fns):
            break
    out = {}
    for name, ts in times.items():
        kept, dropped = drop_warmup_outliers(ts)
        out[name] = Samples(tuple(kept), number[name], tuple(dropped))
    return out


@contextmanager
def using_threads(n: int | None):
    """Numba's worker threads for calls from *this* thread set to ``n`` (None: leave as is),
    restored afterwards; NumPy's own BLAS (the roof probes) likewise. SciPy's BLAS inside
    the kernels stays at one thread per Numba worker."""
    import numba
    from threadpoolctl import ThreadpoolController

    if n is None:
        yield numba.get_num_threads()
        return
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    before = numba.get_num_threads()
    numpy_blas = [c for c in ThreadpoolController().lib_controllers
                  if c.user_api == "blas" and "numpy" in c.filepath]
    blas_before = [c.num_threads for c in numpy_blas]
    numba.set_num_threads(n)
    for c in numpy_blas:
        c.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(before)
        for c, t in zip(numpy_blas, blas_before, strict=True):
            c.set_num_threads(t)
