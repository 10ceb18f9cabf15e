"""Measure, on this host, the kernel choices that depend on the machine; store them.

A choice tuned on one machine can lose on another: decode tiles through BLAS were
1.1-1.5x faster than plain loops on oneMKL (Intel) and slower on OpenBLAS (AMD), where
decode then fell behind torch (BENCHMARKS.md). So ``autotune`` times the candidates side by
side, in round-robin rounds within a time budget (20 s by default), and keeps a candidate
only when it beats the built-in default by more than ``MARGIN``:

1. decode tiles, per head dim D: the KV block Bc and BLAS vs plain loops for each of the
   few-row [g, Bc] products, S = Q K^T and P~ V (``kernels/smallmm.py``), on a long GQA
   cache (the decode benchmark's shape);
2. the decode chunk size (``api.decode_split``'s fewest keys per chunk), on caches with one
   KV head, where the split decides how many tasks there are;
3. the prefill blocks (Br, Bc) per D and length class (``tuning.LK_CLASSES``): on a causal
   prefill against a number of keys in each class, among candidates fit for it: the best
   tile grows with the keys a Q block walks. Every candidate runs once first; the time left
   is then shared by what a round of each class costs, so each gets about as many rounds.

Each candidate is scored by its time over the default's in the same round (paired, since a
shared machine's load drifts between rounds), the median over rounds, then the geometric
mean over the problems of a stage. The result
goes to ``kernels.tuning`` (a JSON file keyed by CPU, BLAS and threads), which every call
reads; calls never tune. Compiling the kernels (``api.warmup``) is done first and is not
counted in the budget. ``python -m attnviz.bench --autotune`` reruns it;
``attnviz.warmup()`` runs it when no tuning is stored.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import hostload, tuning
from .api import _split, streaming_attention, warmup
from .streaming import decode_kernel
from .validate import mask_spec

BUDGET_S = 20.0
MARGIN = 0.03  # a candidate must be this much faster than the default to replace it
MIN_SAMPLE_S = 0.01  # calls per sample grow until a sample takes this long
MAX_ROUNDS = 25  # rounds stop at the stage's deadline or here
SHARES = {"decode": 0.3, "chunk": 0.1}  # of the budget; the prefill blocks get the rest
LOOPS = ((False, False), (True, False), (False, True), (True, True))  # (for S, for P~V)


@dataclass(frozen=True)
class Sizes:
    """The problems timed (small enough for the budget, large enough to be representative).

    decode: (Hq, Hkv, Lk) per D in ``Ds``; chunk: (Hq, Hkv, Lk) at D = ``chunk_D``;
    prefill: (H, Lq, Lk) per D in ``Ds``, raced for the length class of Lk
    (``tuning.lk_class``; a class without one takes the blocks of the class below), among
    the ``blocks`` candidates of that class (the last entry at or below it); and the
    candidates of the other choices.
    """

    Ds: tuple = (64, 128)
    decode: tuple = ((32, 8, 8192),)
    decode_Bc: tuple = (64, 128, 256, 512, 1024)
    chunk: tuple = ((8, 1, 2048), (8, 1, 8192))
    chunk_D: int = 128
    chunks: tuple = (256, 512, 1024, 2048)
    # the very long class on the last 1024 queries of 8192 keys: its Q blocks walk 7-8k keys,
    # at an eighth of a full prefill's time
    prefill: tuple = ((4, 512, 512), (2, 1024, 1024), (1, 4096, 4096), (1, 1024, 8192))
    blocks: tuple = ((0, ((64, 64), (128, 64), (64, 128), (128, 128), (256, 64), (256, 128),
                          (128, 256), (256, 256))),
                     (2048, ((128, 128), (256, 128), (128, 256), (256, 256), (512, 256),
                             (256, 512), (512, 512))),
                     # tall tiles only: at L=8192 D=128 256x512 took 1.056x torch's time
                     # where 512x512 took 1.004x, 512x256 1.021x (BENCHMARKS.md)
                     (8192, ((256, 256), (512, 256), (512, 512))))


FULL = Sizes()
# One thread runs each call about twice as long, and shares the budget at warm-up with all
# threads (``tune_if_missing``): with a third of it (6.7 s) the full problems gave every
# prefill class 2 rounds. These have 0.50-0.75 of the full ones' causal (query, key) pairs,
# each Q block still walking the keys of its class: 3 rounds in 6.7 s, 5-6 in 10 s.
ONE_THREAD = dataclasses.replace(FULL, prefill=((2, 512, 512), (1, 1024, 1024),
                                                (1, 2048, 4096), (1, 512, 8192)))


class _Budget:
    """Deadlines on ``clock``: the whole run's, and a share of what is left for a stage."""

    def __init__(self, budget_s: float, clock: Callable[[], float]):
        self.clock = clock
        self.t0 = clock()
        self.end = self.t0 + budget_s

    def left(self) -> float:
        return self.end - self.clock()

    def until(self, share: float) -> float:
        """A deadline ``share`` of the remaining time from now."""
        now = self.clock()
        return now + max(0.0, self.end - now) * share


def _prepare(fns: dict, clock, deadline: float) -> dict:
    """Run each candidate ``fns[name]()`` once, untimed (warm caches), and size its samples
    from that call: {name: (calls per sample, seconds per call)}. Candidates not reached
    before ``deadline`` are left out."""
    reps = {}
    for name, fn in fns.items():
        if clock() >= deadline:
            break
        t = clock()
        fn()
        dt = max(clock() - t, 1e-9)
        reps[name] = (max(1, min(1000, math.ceil(MIN_SAMPLE_S / dt))), dt)
    return reps


def _rounds(fns: dict, reps: dict, clock, deadline: float) -> dict:
    """Seconds per call of each prepared candidate in each round: {name: [t_round0, ...]},
    timed in rounds until ``deadline`` (or MAX_ROUNDS); each round times every candidate
    once, starting one further along each time (no candidate always follows the same one).
    Candidates never timed are missing from the result; a round cut by the deadline is
    dropped."""
    times: dict = {name: [] for name in reps}
    names = list(reps)
    for r in range(MAX_ROUNDS if names else 0):
        got = {}
        for name in names[r % len(names):] + names[:r % len(names)]:
            if clock() >= deadline:
                return {n: ts for n, ts in times.items() if ts}
            fn, n = fns[name], reps[name][0]
            t = clock()
            for _ in range(n):
                fn()
            got[name] = (clock() - t) / n
        for name, t in got.items():
            times[name].append(t)
    return {n: ts for n, ts in times.items() if ts}


def _race(fns: dict, clock, deadline: float) -> dict:
    """``_prepare`` then ``_rounds``, both within ``deadline``."""
    return _rounds(fns, _prepare(fns, clock, deadline), clock, deadline)


def _round_cost(reps: dict) -> float:
    """Seconds one round of these prepared candidates takes (a sample each)."""
    return sum(n * dt for n, dt in reps.values())


def _choose(races: list[dict], default, fmt, n_cands: int) -> tuple[object, dict, bool]:
    """Score each candidate by its time over the default's in the same round (paired: the
    machine's load drifts between rounds, not within one), the median over rounds, then the
    geometric mean over the races (problems). The best wins if it beats the default by more
    than MARGIN; else the default stays. Returns (choice, the record: best ms per race and
    the score, whether all ``n_cands`` were timed in every race)."""
    complete = bool(races) and all(len(r) == n_cands for r in races)
    usable = [r for r in races if default in r]
    names = set.intersection(*(set(r) for r in usable)) if usable else set()

    def paired(r, c):
        ratios = sorted(a / b for a, b in zip(r[c], r[default], strict=False))
        mid = len(ratios) // 2
        return ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2

    score = {c: math.exp(sum(math.log(paired(r, c)) for r in usable) / len(usable))
             for c in names}
    record = {fmt(c): {"ms": [round(min(r[c]) * 1e3, 4) for r in usable],
                       "vs_default": round(s, 4), "rounds": [len(r[c]) for r in usable]}
              for c, s in sorted(score.items(), key=str)}
    best = min(score, key=score.get, default=default)
    if best != default and score[best] < 1.0 - MARGIN:
        return best, record, complete
    return default, record, complete


def _rand(rng, shape):
    return rng.standard_normal(shape, dtype=np.float32)


def _decode_fn(q, k, v, Bc: int, loops: tuple, min_chunk: int):
    """One decode call of the jitted kernel with these choices (causal, bottom-right)."""
    B, Hq, _, D = q.shape
    Lk = k.shape[2]
    mask = mask_spec(1, Lk, True, None, None, Hq=Hq)
    mk, sink = mask.geometry(), mask.sink_array(Hq)
    per, _ = _split(B, k.shape[1], Lk, Bc, mask.q_offset, mk, min_chunk)
    out = np.empty((B, Hq, 1, D), np.float32)
    lse = np.empty((B, Hq, 1), np.float32)
    scale = np.float32(1.0 / math.sqrt(D))
    return lambda: decode_kernel(q, k, v, out, lse, scale, mask.q_offset, mk, sink, Bc, per,
                                 loops)


def _split_time(clock, end: float, parts_left: float) -> float:
    """A deadline for the next part of the time until ``end``: 1 / ``parts_left`` of it (the
    next of that many equal parts; any number, taken as at least 1)."""
    now = clock()
    return now + max(0.0, end - now) / max(1.0, parts_left)


def _races(problems, make_fns, clock, end: float, say, label) -> list[dict]:
    """One race per problem (its inputs made just before), sharing the time until ``end``."""
    races = []
    for n, prob in enumerate(problems):
        say(label(prob))
        fns = make_fns(prob)
        races.append(_race(fns, clock, _split_time(clock, end, len(problems) - n)))
    return races


def autotune(*, budget_s: float = BUDGET_S, progress: Callable[[str], None] | None = None,
             clock: Callable[[], float] = time.perf_counter, sizes: Sizes | None = None,
             save: bool = True, seed: int = 0) -> tuning.Tuning:
    """Time the candidates within ``budget_s`` seconds of ``clock`` (compiling excluded) and
    return the Tuning (stored for this host unless ``save=False``). ``progress(text)`` gets a
    line per step. Choices the budget left unmeasured keep their built-in defaults
    (``complete=False``). ``sizes``: the problems (default ``FULL``, ``ONE_THREAD`` when
    Numba runs one thread)."""
    say = progress or (lambda text: None)
    if sizes is None:
        import numba

        sizes = ONE_THREAD if numba.get_num_threads() == 1 else FULL
    warmup()  # compile or load every kernel first: not part of the budget
    key = tuning.host_key()
    load_start = hostload.cpu_snapshot()
    budget = _Budget(budget_s, clock)
    rng = np.random.default_rng(seed)
    base = tuning.BUILTIN
    measured: dict = {}
    complete = True

    def pct() -> str:
        return f"autotune {min(100, round(100 * (clock() - budget.t0) / budget_s)):3d}%"

    def qkv(Hq, Hkv, Lq, Lk, D):
        return (_rand(rng, (1, Hq, Lq, D)), _rand(rng, (1, Hkv, Lk, D)),
                _rand(rng, (1, Hkv, Lk, D)))

    # 1. decode tiles per D: (Bc, (loops for S, for P~V))
    decode = {}
    stage_end = budget.until(SHARES["decode"])
    for n, D in enumerate(sizes.Ds):
        default = (base.blocks_for(D)[1], tuning.BUILTIN_DECODE_LOOPS)
        cands = list(dict.fromkeys([default] + [(Bc, lp) for Bc in sizes.decode_Bc
                                                for lp in LOOPS]))

        def fns(prob, D=D, cands=cands):
            q, k, v = qkv(prob[0], prob[1], 1, prob[2], D)
            return {c: _decode_fn(q, k, v, c[0], c[1], base.decode_min_chunk) for c in cands}

        races = _races(sizes.decode, fns, clock, _split_time(clock, stage_end, len(sizes.Ds) - n),
                       say, lambda p, D=D: f"{pct()}: decode tiles D={D} (Hq={p[0]} Hkv={p[1]} "
                                           f"Lk={p[2]}): KV block x BLAS or loops per product")
        choice, measured[f"decode D={D}"], done = _choose(
            races, default, lambda c: f"Bc={c[0]} {tuning.products(c[1])}", len(cands))
        if measured[f"decode D={D}"]:  # unmeasured: not stored (the prefill's Bc holds)
            decode[D] = choice
        complete &= done

    # 2. decode chunk size, with the tiles just chosen for chunk_D
    D = sizes.chunk_D
    Bc, loops = decode.get(D, (base.blocks_for(D)[1], tuning.BUILTIN_DECODE_LOOPS))
    chunks = list(dict.fromkeys((base.decode_min_chunk, *sizes.chunks)))

    def chunk_fns(prob):
        q, k, v = qkv(prob[0], prob[1], 1, prob[2], D)
        return {c: _decode_fn(q, k, v, Bc, loops, c) for c in chunks}

    races = _races(sizes.chunk, chunk_fns, clock,
                   budget.until(SHARES["chunk"] / (1.0 - SHARES["decode"])), say,
                   lambda p: f"{pct()}: decode chunk size (Hq={p[0]} Hkv={p[1]} Lk={p[2]}): "
                             f"{chunks} keys")
    min_chunk, measured["decode_min_chunk"], done = _choose(races, base.decode_min_chunk,
                                                            lambda c: f"{c} keys", len(chunks))
    complete &= done

    # 3. prefill blocks per D and length class. Every stage's candidates first run once
    #    (warm caches; what a round of each costs), then the time left is shared so that
    #    every stage gets about as many rounds: a long prefill's round costs up to 5x a short
    #    one's, and by the square root of the work the short classes got 5-7 rounds on 2
    #    threads against 8-20 for the long ones
    blocks: dict = {}
    stage_end = budget.until(1.0)
    first_end = budget.until(0.5)  # the first runs may take half of it; rounds get the rest
    by_class: dict = {}
    for prob in sizes.prefill:
        by_class.setdefault(tuning.lk_class(prob[2]), []).append(prob)

    def label(D, p, cands):
        return f"prefill blocks D={D} (H={p[0]} Lq={p[1]} Lk={p[2]}): {len(cands)} (Br, Bc)"

    stages = []  # (D, class, default, candidates, [(problem, fns, reps) per problem])
    for D in sizes.Ds:
        for c in sorted(by_class):
            default = base.blocks_for(D, c)
            fit = max((entry for entry in sizes.blocks if entry[0] <= c), key=lambda e: e[0],
                      default=(0, ()))[1]  # no entry at or below the class: the default alone
            cands = list(dict.fromkeys((default, *fit)))
            runs = []
            for H, Lq, Lk in by_class[c]:
                say(f"{pct()}: {label(D, (H, Lq, Lk), cands)}, a first run of each")
                q, k, v = qkv(H, H, Lq, Lk, D)
                fns = {b: (lambda b=b, q=q, k=k, v=v: streaming_attention(
                    q, k, v, q_block=b[0], kv_block=b[1], check_finite=False)) for b in cands}
                runs.append(((H, Lq, Lk), fns, _prepare(fns, clock, first_end)))
            stages.append((D, c, default, cands, runs))
    cost_left = sum(_round_cost(reps) for *_, runs in stages for _, _, reps in runs)
    for D, c, default, cands, runs in stages:
        races = []
        for prob, fns, reps in runs:
            cost = _round_cost(reps)
            if not cost:  # the budget ran out before its first runs
                races.append({})
                continue
            say(f"{pct()}: {label(D, prob, cands)}")
            deadline = _split_time(clock, stage_end, cost_left / cost)
            next(iter(fns.values()))()  # untimed: its inputs back in cache, as in the race
            races.append(_rounds(fns, reps, clock, deadline))
            cost_left -= cost
        kind = f"prefill blocks D={D} Lk>={c}"
        choice, measured[kind], done = _choose(races, default, lambda b: f"{b[0]}x{b[1]}",
                                               len(cands))
        if measured[kind]:  # a class the budget left unmeasured takes the class below's
            blocks.setdefault(D, {})[c] = choice
        complete &= done

    seconds = clock() - budget.t0
    others = hostload.other_cores(load_start, hostload.cpu_snapshot())
    result = tuning.Tuning(blocks, decode, min_chunk, "tuned on this host", key,
                           measured, seconds, complete, others)
    if others is not None:
        say(f"autotune: other processes used {others:.2f} cores meanwhile"
            + (" (a busy machine: these choices may be noise)" if result.busy else ""))
    if save:
        path = tuning.save(result)
        result = tuning.load(key) or result
        say(f"autotune done in {seconds:.1f} s: {tuning.summary(result)['text']}")
        say(f"autotune stored in {path}")
    else:
        say(f"autotune done in {seconds:.1f} s")
    return result


def tune_if_missing(progress: Callable[[str], None] | None = None,
                    budget_s: float = BUDGET_S) -> tuning.Tuning | None:
    """Run the autotune for each thread count a caller may use (all threads, and 1 thread:
    the timing panel's clean-scaling choice) that has no stored tuning on this host (CPU,
    BLAS), or whose tuning was measured on a busy machine while this one is quiet now; they
    share ``budget_s`` (half each when both run). A redone tuning replaces the
    stored one only if other processes took less of the machine during it. Does nothing
    under ``ATTNVIZ_AUTOTUNE=off``. Returns the tuning in force, or None when turned off."""
    if tuning.disabled():
        return None
    import numba

    n = numba.get_num_threads()
    stored = {t: tuning.load(tuning.host_key(t)) for t in dict.fromkeys((n, 1))}
    todo = [t for t, st in stored.items() if st is None]
    busy = [t for t, st in stored.items() if st is not None and st.busy]
    if busy:
        now = hostload.others_now()
        if now is not None and not hostload.is_busy(now):
            todo += busy
            if progress:
                progress("autotune: the stored tuning was measured on a busy machine (other "
                         f"processes used {max(stored[t].others for t in busy):.2f} cores); "
                         f"the machine is quiet now ({now:.2f}): measuring again")
        elif progress:
            progress("autotune: the stored tuning was measured on a busy machine; the machine "
                     "is busy now too, so it stays")
    if not todo:
        return tuning.active()
    if progress and any(stored[t] is None for t in todo):
        progress("autotune: no tuning stored for this host yet; measuring the kernels' "
                 f"choices (<= {budget_s:.0f} s, once)")
    shares = {n: 0.5, 1: 0.5} if len(todo) == 2 else {t: 1.0 for t in todo}
    try:
        for t in todo:
            numba.set_num_threads(t)
            if progress and len(todo) == 2:
                progress(f"autotune: on {t} thread{'s' * (t > 1)}")
            new = autotune(budget_s=budget_s * shares[t], progress=progress, save=False)
            old = stored[t]
            if old is None or new.others is None or old.others is None or new.others < old.others:
                path = tuning.save(new)
                if progress:
                    progress(f"autotune stored in {path}: {tuning.summary(new)['text']}")
            elif progress:
                progress(f"autotune: kept the stored tuning (other processes used "
                         f"{old.others:.2f} cores then, {new.others:.2f} now)")
    finally:
        numba.set_num_threads(n)
    return tuning.active()
