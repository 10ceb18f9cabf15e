"""The masks of real models, timed side by side in one process:

    python -m attnviz.bench.masks [--threads 1] [--H 8] [--D 128] [--repeats 5]
                                  [--Ls 4096 8192 16384]

* packed documents: prefill L = 4096 with 4 documents of 1024 tokens against the causal
  L = 4096 call on the same inputs. Cross-document tiles are skipped, so the document mask
  does about a quarter of the causal work (4 triangles of 1024 instead of one of 4096);
* sinks + window (StreamingLLM): prefill with 4 sinks and a window W at growing L; each row
  sees W + 4 keys, so the time per token should stay flat (linear in L), while causal's
  grows with L.

Times are per call: the min over rounds of ``measure.time_round_robin`` (warm calls only,
samples of >= 0.05 s, the contenders of a group interleaved), with the median beside it and
the cores' worth of CPU other processes took meanwhile (``machine.other_cores``). On a busy
shared host ``--threads 1`` gives the cleaner ratios. The work
ratio printed beside them is counted from the kernels' own tile classes (``masks.tile_status``)
at the kernel's default blocks: the share of score entries in computed tiles.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

from kernels import default_blocks, streaming_attention

from ..masks import tile_status
from .machine import cpu_snapshot, other_cores, set_threads
from .measure import time_round_robin


def computed_entries(L: int, Br: int, Bc: int, **mask) -> int:
    """Score entries inside the tiles the kernel computes (full or partial)."""
    status = tile_status(L, L, Br, Bc, causal=True, q_offset=0, **mask)
    rows = np.minimum(Br, L - Br * np.arange(status.shape[0]))[:, None]
    cols = np.minimum(Bc, L - Bc * np.arange(status.shape[1]))[None, :]
    return int((rows * cols * (status != "skipped")).sum())


def _inputs(L: int, H: int, D: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, H, L, D), dtype=np.float32) for _ in range(3)]


def _time(calls: dict, repeats: int) -> dict[str, tuple[float, float]]:
    for call in calls.values():
        call()  # compile / load, untimed
    res = time_round_robin(calls, repeats=repeats, min_repeats=repeats)
    return {n: (min(t), statistics.median(t)) for n, (t, _) in res.items()}


def documents(L: int, n_docs: int, H: int, D: int, repeats: int) -> list[str]:
    q, k, v = _inputs(L, H, D)
    doc_ids = np.repeat(np.arange(n_docs), L // n_docs)
    Br, Bc = default_blocks(D, L)
    t0 = cpu_snapshot()
    t = _time({
        "causal": lambda: streaming_attention(q, k, v),
        "documents": lambda: streaming_attention(q, k, v, doc_ids=doc_ids),
    }, repeats)
    others = other_cores(t0, cpu_snapshot())
    work = computed_entries(L, Br, Bc, doc_ids=doc_ids) / computed_entries(L, Br, Bc)
    return [
        f"### Packed documents: prefill L={L}, {n_docs} documents of {L // n_docs}, "
        f"B=1 H={H} D={D}, blocks {Br}x{Bc}",
        "",
        "| mask | min | median | time / causal | computed tiles' work / causal |",
        "|---|---|---|---|---|",
        f"| causal | {1e3 * t['causal'][0]:.1f} ms | {1e3 * t['causal'][1]:.1f} ms | 1 | 1 |",
        f"| {n_docs} documents | {1e3 * t['documents'][0]:.1f} ms | "
        f"{1e3 * t['documents'][1]:.1f} ms | {t['documents'][0] / t['causal'][0]:.3f} | "
        f"{work:.3f} |",
        "",
        f"Other processes used {others:.2f} cores meanwhile." if others is not None else "",
    ]


def sinks_window(Ls: list[int], sinks: int, W: int, H: int, D: int,
                 repeats: int) -> list[str]:
    lines = [
        f"### Sinks + window: prefill, {sinks} sinks + window {W}, B=1 H={H} D={D}",
        "",
        "| L | sinks + window: min | median | per 1k tokens | causal: min | per 1k tokens |",
        "|---|---|---|---|---|---|",
    ]
    t0 = cpu_snapshot()
    for L in Ls:
        q, k, v = _inputs(L, H, D)
        calls = {"sinks + window": lambda q=q, k=k, v=v: streaming_attention(
            q, k, v, window=W, sinks=sinks)}
        if L <= 8192:  # causal is quadratic: beyond this it only costs time
            calls["causal"] = lambda q=q, k=k, v=v: streaming_attention(q, k, v)
        t = _time(calls, repeats)
        s_min, s_med = t["sinks + window"]
        causal = (f"{1e3 * t['causal'][0]:.1f} ms | {1e6 * t['causal'][0] / L:.1f} ms"
                  if "causal" in t else "- | -")
        lines.append(f"| {L} | {1e3 * s_min:.1f} ms | {1e3 * s_med:.1f} ms | "
                     f"{1e6 * s_min / L:.2f} ms | {causal} |")
    others = other_cores(t0, cpu_snapshot())
    if others is not None:
        lines += ["", f"Other processes used {others:.2f} cores meanwhile."]
    return lines


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m attnviz.bench.masks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="Numba threads (default: all)")
    ap.add_argument("--H", type=int, default=8, help="heads (default 8)")
    ap.add_argument("--D", type=int, default=128, help="head dim (default 128)")
    ap.add_argument("--repeats", type=int, default=5, help="timing rounds (default 5)")
    ap.add_argument("--L", type=int, default=4096, help="documents: sequence length")
    ap.add_argument("--docs", type=int, default=4, help="documents: how many (equal)")
    ap.add_argument("--Ls", type=int, nargs="+", default=[4096, 8192, 16384],
                    help="sinks + window: sequence lengths")
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--window", type=int, default=512)
    a = ap.parse_args(argv)
    if a.threads:
        set_threads(a.threads)
    lines = documents(a.L, a.docs, a.H, a.D, a.repeats)
    lines += [""] + sinks_window(a.Ls, a.sinks, a.window, a.H, a.D, a.repeats)
    print("\n".join(lines))  # the CLI's output: a Markdown section


if __name__ == "__main__":
    main()
