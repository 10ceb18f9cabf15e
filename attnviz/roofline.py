"""Why one method wins at a given size: a roofline of the measured points, and a sentence.

Roofline (Williams, Waterman & Patterson 2009): a kernel that does F FLOPs while moving Q
bytes to and from memory has arithmetic intensity I = F / Q; it cannot beat
``min(GEMM roof, bandwidth x I)``. Both roofs are measured in the same run as the points
(``measure_roofs``, on the timing's threads), since on a shared machine only same-run
ratios hold.

The bytes each method moves are a model of what reaches memory when its working data does
not fit in cache (``bytes_moved``):

* standard (``kernels/standard.py``): per task of ``ROWS`` query rows, all of K and V and
  ``S_PASSES`` passes over its [ROWS, Lk] slab of S: the GEMM writes it, the softmax reads it
  for the max, again for exp and sum, writes P back, and P V reads it once more;
* streaming (``kernels/streaming.py``): per Q block, Q and O once and the K/V tiles the block
  sees (tiles stay in cache); decode reads each visible K/V row once per KV head.

``explain`` turns one measured row of the L sweep into a sentence naming the reason the
winner wins: passes over memory, per-tile overheads, thread start-up or cache fit.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernels import streaming_attention
from kernels.standard import ROWS
from kernels.tile import cdiv

from .masks import row_spans
from .sampling import measure
from .timing import Problem

F32 = 4
S_PASSES = 5  # standard: write S, read (max), read (exp, sum), write P, read (P V)


@dataclass(frozen=True)
class Roofs:
    """What the machine gave in this run, on the timing's threads: the GEMM roof (GFLOP/s),
    the read bandwidth (GB/s), and the time of an almost empty kernel call (s)."""

    gemm_gflops: float
    read_gbps: float
    call_overhead_s: float
    threads: int

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where the bandwidth line meets the GEMM roof."""
        return self.gemm_gflops / self.read_gbps

    def roof(self, intensity: float) -> float:
        """Attainable GFLOP/s at an arithmetic intensity (FLOP/byte)."""
        return min(self.gemm_gflops, self.read_gbps * intensity)


def measure_roofs(p: Problem, threads: int, *, repeats: int = 3,
                  read_bytes: int = 256 * 2**20, target_s: float = 0.05) -> Roofs:
    """GEMM roof (NumPy's BLAS, 1024^3 float32), read bandwidth (a pass of ``np.max`` over
    ``read_bytes``, far above the caches, one part per thread) and the median time of a
    2-key call of ``p``'s path (decode or prefill, ``p``'s head dim): argument checks, the
    output's allocation, waking the worker threads. Call inside ``sampling.using_threads``.
    The roofs are the best sample of each (the least disturbed), sampled for ``target_s``."""
    from .bench.machine import GemmProbe, ReadProbe

    gemm = GemmProbe(1024)
    t_gemm = measure(gemm, repeats=repeats, target_s=target_s, budget_s=1.0).min
    probe = ReadProbe(read_bytes, threads)
    try:
        t_read = measure(probe, repeats=repeats, target_s=target_s, budget_s=1.0).min
    finally:
        probe.close()
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 1, 1 if p.Lq == 1 else 2, p.D), dtype=np.float32)
    k = rng.standard_normal((1, 1, 2, p.D), dtype=np.float32)
    t_call = measure(lambda: streaming_attention(q, k, k), repeats=repeats,
                     target_s=target_s, budget_s=1.0).median
    return Roofs(gemm.flops / t_gemm / 1e9, probe.nbytes / t_read / 1e9, t_call, threads)


def cache_sizes() -> dict[str, int]:
    """{"L2": bytes, "L3": bytes} of CPU 0 from sysfs (absent levels left out)."""
    out = {}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in sorted(base.glob("index*")):
        try:
            level = (idx / "level").read_text().strip()
            kind = (idx / "type").read_text().strip()
            size = (idx / "size").read_text().strip()
        except OSError:
            continue
        if kind == "Instruction" or level not in ("2", "3"):
            continue
        mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
        out[f"L{level}"] = int(size.rstrip("KMG")) * mult
    return out


# --- what each method moves ------------------------------------------------------------------

def _spans(p: Problem) -> tuple[np.ndarray, np.ndarray]:
    return row_spans(p.Lq, p.Lk, causal=p.causal, q_offset=p.q_offset, window=p.window or 0)


def streaming_tiles(p: Problem) -> int:
    """KV tiles the streaming kernel visits for one query head (prefill: per Q block, from
    the first row's first key to the last row's last, as ``prefill_kernel`` walks them;
    decode: one block of g heads)."""
    Br, Bc = p.blocks
    lo, hi = _spans(p)
    if p.Lq == 1:
        return max(cdiv(int(hi[0]), Bc), int(lo[0]) // Bc + 1) - int(lo[0]) // Bc
    starts = np.arange(0, p.Lq, Br)
    ends = np.minimum(starts + Br, p.Lq) - 1
    j_lo, j_hi = lo[starts] // Bc, -(-hi[ends] // Bc)
    return int(np.maximum(j_hi - j_lo, 0).sum())


def computed_pairs(p: Problem, method: str) -> int:
    """(query, key) scores a method computes, masked ones included: standard all Lq x Lk
    (its GEMM spans whole rows), streaming the pairs inside the tiles it visits."""
    if method == "standard":
        return p.B * p.Hq * p.Lq * p.Lk
    Br, Bc = p.blocks
    lo, hi = _spans(p)
    if p.Lq == 1:
        j_lo = int(lo[0]) // Bc
        keys = min(max(cdiv(int(hi[0]), Bc), j_lo + 1) * Bc, p.Lk) - j_lo * Bc
        return p.B * p.Hq * keys
    starts = np.arange(0, p.Lq, Br)
    ends = np.minimum(starts + Br, p.Lq)
    j_lo, j_hi = lo[starts] // Bc, -(-hi[ends - 1] // Bc)
    keys = np.maximum(np.minimum(j_hi * Bc, p.Lk) - j_lo * Bc, 0)
    return int(p.B * p.Hq * ((ends - starts) * keys).sum())


def bytes_moved(p: Problem, method: str) -> int:
    """The model's memory traffic of one call (see the module docstring), in bytes."""
    B, Hq, Hkv, Lq, Lk, D = p.B, p.Hq, p.Hkv, p.Lq, p.Lk, p.D
    q_o = 2 * F32 * B * Hq * Lq * D + F32 * B * Hq * Lq  # Q in, O and LSE out
    kv_row = 2 * F32 * D  # one key's K and V rows
    if method == "standard":
        tasks = B * Hkv if Lq == 1 else B * Hq * cdiv(Lq, ROWS)
        return q_o + tasks * Lk * kv_row + S_PASSES * F32 * B * Hq * Lq * Lk
    Br, Bc = p.blocks
    if Lq == 1:
        lo, hi = _spans(p)
        return q_o + B * Hkv * int(hi[0] - lo[0]) * kv_row
    return q_o + B * Hq * streaming_tiles(p) * Bc * kv_row


def intensity(p: Problem, method: str) -> float:
    """Arithmetic intensity: useful FLOPs per byte moved (FLOP/byte)."""
    return p.flops / max(1, bytes_moved(p, method))


def points(rows: list[dict]) -> list[dict]:
    """The roofline's points from the L sweep's rows: {method, L, intensity, gflops}."""
    out = []
    for r in rows:
        for m in ("standard", "streaming"):
            if r.get(f"{m}_gflops"):
                out.append({"method": m, "L": r["L"], "gflops": r[f"{m}_gflops"],
                            "intensity": intensity(r["problem"], m)})
    return out


# --- the sentence ---------------------------------------------------------------------------

def _t(s: float) -> str:
    from .plots import duration_label

    return duration_label(s)


def _b(n: float) -> str:
    from .plots import bytes_label

    return bytes_label(n)


def explain(row: dict, roofs: Roofs, caches: dict[str, int] | None = None) -> str:
    """Why the faster method won at ``row["L"]``, from the measurements: the reason is one
    of thread start-up (both calls near the cost of an empty call), passes over memory
    (standard's S beyond the cache), cache fit (standard's S rows in cache) with streaming's
    per-tile overheads."""
    p: Problem = row["problem"]
    t_std, t_str = row.get("standard_s"), row.get("streaming_s")
    if not (t_std and t_str):
        return ""
    caches = cache_sizes() if caches is None else caches
    L2, L3 = caches.get("L2"), caches.get("L3")
    L = row["L"]
    winner, loser = ("standard", "streaming") if t_std < t_str else ("streaming", "standard")
    ratio = max(t_std, t_str) / min(t_std, t_str)
    head = f"At L = {L}, {winner} is {ratio:.3g}x faster ({_t(min(t_std, t_str))} vs " \
           f"{_t(max(t_std, t_str))})"
    over = roofs.call_overhead_s
    if min(t_std, t_str) < 5 * over:
        return (f"{head}, but at this size thread start-up and fixed costs decide, not "
                f"arithmetic: an almost empty call takes {_t(over)} here (argument checks, "
                f"allocating the output, waking the {roofs.threads} worker "
                f"thread{'s' * (roofs.threads > 1)}), {100 * over / min(t_std, t_str):.0f}% "
                f"of {winner}'s time.")
    rows_per_task = 1 if p.Lq == 1 else min(ROWS, p.Lq)
    group = p.Hq // p.Hkv if p.Lq == 1 else 1
    slab = F32 * rows_per_task * group * p.Lk  # one standard task's rows of S
    s_total = F32 * p.B * p.Hq * p.Lq * p.Lk
    Br, Bc = p.blocks
    tiles = p.B * p.Hq * streaming_tiles(p) if p.Lq > 1 else p.B * p.Hkv * streaming_tiles(p)
    per_tile = max(t_str - over, 0.0) / max(tiles, 1) * roofs.threads
    tile_rows = Br if p.Lq > 1 else group
    tile_flops = 4 * tile_rows * Bc * p.D
    g_std, g_str = row.get("standard_gflops") or 0, row.get("streaming_gflops") or 0
    fits = L2 is not None and slab <= L2
    if winner == "standard":
        where = (f"each of its tasks' score rows ({rows_per_task * group} x {p.Lk} floats = "
                 f"{_b(slab)}) fit in the {_b(L2)} L2 cache, so its {S_PASSES} passes over S "
                 "stay in cache (cache fit)") if fits else (
                 f"its S ({_b(s_total)}) spills from the cache, yet the "
                 f"{roofs.read_gbps:.0f} GB/s measured here still carries its "
                 f"{S_PASSES} passes in time")
        return (f"{head}: {where}; streaming instead pays per-tile overheads on {tiles} "
                f"tile updates of {tile_rows} x {Bc} (a small GEMM call, the rescale of the "
                f"accumulator by alpha, the masks): ~{_t(per_tile)} per tile on a thread for "
                f"{tile_flops / 1e6:.3g} MFLOP, so it runs at {g_str:.3g} GFLOP/s against "
                f"standard's {g_std:.3g}.")
    traffic = bytes_moved(p, "standard")
    floor = traffic / (roofs.read_gbps * 1e9)
    visible = max(1, p.flops // (4 * p.D))
    w_std = computed_pairs(p, "standard") / visible
    w_str = computed_pairs(p, "streaming") / visible
    work = (f"standard computes all {p.Lq} x {p.Lk} scores per head, {w_std:.2g}x the "
            f"visible ones (the mask drops the rest only after they are computed), where "
            f"streaming skips the masked tiles ({w_str:.2g}x)") if w_std > 1.1 * w_str else ""
    if not fits or (L3 is not None and s_total > L3):
        s_traffic = S_PASSES * s_total
        why = (f"a task's rows, {_b(slab)}, exceed the {_b(L2) + ' L2' if L2 else 'L2'} "
               "cache" if not fits else
               f"its rows fit the {_b(L2)} L2 cache, but the whole S, {_b(s_total)}, is more "
               f"than the {_b(L3)} L3 holds")
        return (f"{head}: passes over memory. Standard writes and rereads its score matrix "
                f"{S_PASSES} times ({why}): {S_PASSES} x {_b(s_total)} = "
                f"{_b(s_traffic)}, plus {_b(traffic - s_traffic)} for Q, K, V in and O, LSE "
                f"out, about {_b(traffic)} of memory traffic per call, which at the "
                f"{roofs.read_gbps:.0f} GB/s measured here takes at least {_t(floor)}, "
                f"{100 * floor / t_std:.0f}% of its time; streaming keeps "
                f"each {tile_rows} x {Bc} tile in cache and reads K and V once per Q block, "
                f"running at {g_str:.3g} GFLOP/s, {100 * g_str / roofs.gemm_gflops:.0f}% of "
                "the GEMM roof" + (f". Besides, {work}." if work else "."))
    return (f"{head}: standard's rows of S still fit in the cache, so this is work, not "
            f"memory traffic: {work + '; ' if work else ''}standard also sweeps each score "
            f"row {S_PASSES - 2} more times (max, exp and sum, normalize) where streaming "
            f"folds the softmax into each tile: streaming {g_str:.3g} GFLOP/s against "
            f"standard's {g_std:.3g}.")
