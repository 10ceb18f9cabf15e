"""The memory footprint model: pure functions of a configuration, in bytes.

What each method must hold beyond its inputs q, k, v:

* standard (``kernels.standard_attention``): the score matrix S [B, Hq, Lq, Lk] float32,
  softmaxed into P in place, plus O and LSE. (A NumPy version holds S *and* P, and more
  temporaries: ``numpy_standard_bytes``.)
* streaming: per worker thread a score tile S and a P~ tile [Br, Bc], an accumulator and a
  P~V product [Br, D] each, and m, l, alpha [Br]; plus O and LSE. Nothing grows with Lk.
* streaming decode (Lq == 1, split-KV): per worker thread the g = Hq / Hkv query rows of one
  KV head as a block, its S and P~ tiles [g, Bc], alpha, sink logits and row positions [g];
  plus the partial (m, l, acc) of every chunk, [B, Hkv, C, g, D + 2], and O and LSE.
* GQA by copying (the seed's engine's ``k_repeated``/``v_repeated``): K and V copied out to
  Hq heads, 2 * B * Hq * Lk * D floats. Indexing ``h // (Hq // Hkv)`` costs nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

F32 = 4  # bytes per float32


@dataclass(frozen=True)
class Shape:
    """One attention call: batch, query heads, KV heads, query rows, keys, head dim."""

    B: int
    Hq: int
    Hkv: int
    Lq: int
    Lk: int
    D: int


def output_bytes(s: Shape) -> int:
    """O [B, Hq, Lq, D] and LSE [B, Hq, Lq]."""
    return F32 * s.B * s.Hq * s.Lq * (s.D + 1)


def scores_bytes(s: Shape) -> int:
    """One full [B, Hq, Lq, Lk] float32 matrix: S (or P)."""
    return F32 * s.B * s.Hq * s.Lq * s.Lk


def standard_bytes(s: Shape) -> int:
    """kernels.standard_attention: S (P in place) + output."""
    return scores_bytes(s) + output_bytes(s)


def numpy_standard_bytes(s: Shape) -> int:
    """The textbook NumPy version: S, P, and one temporary of the same size, + output."""
    return 3 * scores_bytes(s) + output_bytes(s)


def working_set_terms(Br: int, Bc: int, D: int) -> list[tuple[str, str, int]]:
    """The buffers of one streaming task (what ``kernels.streaming`` allocates per Q block),
    as (name, shape in words, bytes): they add up to ``tile_working_set``."""
    return [
        ("S tile", f"{Br}×{Bc} float32", F32 * Br * Bc),
        ("P~ tile", f"{Br}×{Bc} float32", F32 * Br * Bc),
        ("acc", f"{Br}×{D} float32", F32 * Br * D),
        ("m, l, alpha", f"3×{Br} float32", F32 * 3 * Br),
        ("row positions", f"{Br} int64", 8 * Br),
    ]


def tile_working_set(Br: int, Bc: int, D: int) -> int:
    """One streaming worker: S and P~ tiles [Br, Bc]; acc [Br, D]; m, l, alpha [Br];
    qpos [Br] int64 (the sum of ``working_set_terms``)."""
    return sum(b for _, _, b in working_set_terms(Br, Bc, D))


def decode_working_set_terms(g: int, Bc: int, D: int) -> list[tuple[str, str, int]]:
    """The buffers of one decode task (what ``kernels.streaming.decode_kernel`` allocates per
    chunk of one KV head; its m, l, acc are the chunk's partial state, counted apart)."""
    return [
        ("Q group", f"{g}×{D} float32", F32 * g * D),
        ("S tile", f"{g}×{Bc} float32", F32 * g * Bc),
        ("P~ tile", f"{g}×{Bc} float32", F32 * g * Bc),
        ("alpha, sink logits", f"2×{g} float32", F32 * 2 * g),
        ("row positions", f"{g} int64", 8 * g),
    ]


def task_terms(s: Shape, Br: int, Bc: int) -> list[tuple[str, str, int]]:
    """One streaming task's buffers for the path ``s`` takes: decode's (Lq == 1: the g query
    heads of a KV head are the rows, Br does not apply) or prefill's Br x Bc tiles."""
    if s.Lq == 1:
        return decode_working_set_terms(s.Hq // s.Hkv, Bc, s.D)
    return working_set_terms(Br, Bc, s.D)


def task_bytes(s: Shape, Br: int, Bc: int) -> int:
    """The sum of ``task_terms``: one worker thread's buffers at a time."""
    return sum(b for _, _, b in task_terms(s, Br, Bc))


def tasks(s: Shape, Br: int, chunks: int = 1) -> int:
    """The streaming kernel's parallel tasks: one Q block of one query head in prefill
    (B * Hq * ceil(Lq / Br)), one chunk of one KV head in decode (B * Hkv * chunks)."""
    if s.Lq == 1:
        return s.B * s.Hkv * chunks
    return s.B * s.Hq * -(-s.Lq // Br)


def busy_threads(s: Shape, Br: int, threads: int, chunks: int = 1) -> int:
    """Threads holding a task's buffers at once: each task allocates its own, so no more
    than there are tasks."""
    return max(1, min(threads, tasks(s, Br, chunks)))


def working_set_bytes(s: Shape, Br: int, Bc: int, threads: int, chunks: int = 1) -> int:
    """One task's buffers on each busy thread (``busy_threads``)."""
    return busy_threads(s, Br, threads, chunks) * task_bytes(s, Br, Bc)


def streaming_bytes(s: Shape, Br: int, Bc: int, threads: int, chunks: int = 1) -> int:
    """kernels.streaming_attention: one task's buffers per busy thread + output; in decode
    (Lq == 1) also the partial states of its ``chunks`` chunks per KV head."""
    partials = decode_partials_bytes(s, chunks) if s.Lq == 1 else 0
    return working_set_bytes(s, Br, Bc, threads, chunks) + partials + output_bytes(s)


def decode_partials_bytes(s: Shape, chunks: int) -> int:
    """Split-KV decode: (m, l, acc) per chunk for every group of g = Hq / Hkv query heads."""
    g = s.Hq // s.Hkv
    return F32 * s.B * s.Hkv * chunks * g * (s.D + 2)


def gqa_copy_bytes(s: Shape) -> int:
    """K and V repeated out to Hq heads (what indexing by h // (Hq // Hkv) avoids)."""
    return 2 * F32 * s.B * s.Hq * s.Lk * s.D if s.Hq != s.Hkv else 0


def kv_bytes(s: Shape) -> int:
    """The K and V inputs themselves (the KV cache), for scale."""
    return 2 * F32 * s.B * s.Hkv * s.Lk * s.D


def footprint(s: Shape, Br: int, Bc: int, threads: int, chunks: int = 1) -> dict[str, int]:
    """All the model's numbers for one configuration, by name (bytes); ``chunks``: the
    decode path's chunks per KV head (Lq == 1)."""
    partials = {"decode partial states (m, l, acc per chunk)": decode_partials_bytes(s, chunks)}
    return {
        "standard: S/P [B,Hq,Lq,Lk]": scores_bytes(s),
        "standard total (+ output)": standard_bytes(s),
        "numpy standard total (S, P, temp, output)": numpy_standard_bytes(s),
        "streaming working set (all busy threads)": working_set_bytes(s, Br, Bc, threads,
                                                                        chunks),
        **(partials if s.Lq == 1 else {}),
        "streaming total (+ output)": streaming_bytes(s, Br, Bc, threads, chunks),
        "output O + LSE": output_bytes(s),
        "K/V inputs": kv_bytes(s),
        "GQA copy of K/V (repeat_kv)": gqa_copy_bytes(s),
    }


def bytes_label(b: float) -> str:
    """Bytes in the largest binary unit they reach, up to EiB (3 significant digits; never
    an exponent: a standard attention at L = 128K with many heads needs PiB)."""
    for unit, k in (("EiB", 2**60), ("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30),
                    ("MiB", 2**20), ("KiB", 2**10)):
        if b >= k:
            return f"{b / k:.3g} {unit}"
    return f"{b:.0f} B"
