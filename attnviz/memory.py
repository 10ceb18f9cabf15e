"""The memory footprint model: pure functions of a configuration, in bytes.

What each method must hold beyond its inputs q, k, v:

* standard (``kernels.standard_attention``): the score matrix S [B, Hq, Lq, Lk] float32,
  softmaxed into P in place, plus O and LSE. (A NumPy version holds S *and* P, and more
  temporaries: ``numpy_standard_bytes``.)
* streaming: per worker thread a score tile S and a P~ tile [Br, Bc], an accumulator and a
  P~V product [Br, D] each, and m, l, alpha [Br]; plus O and LSE. Nothing grows with Lk.
* decode split-KV: the partial (m, l, acc) of every chunk, [B, Hkv, C, g, D + 2].
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


def streaming_bytes(s: Shape, Br: int, Bc: int, threads: int) -> int:
    """kernels.streaming_attention, prefill: one working set per thread + output."""
    return threads * tile_working_set(Br, Bc, s.D) + output_bytes(s)


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


def footprint(s: Shape, Br: int, Bc: int, threads: int) -> dict[str, int]:
    """All the model's numbers for one configuration, by name (bytes)."""
    return {
        "standard: S/P [B,Hq,Lq,Lk]": scores_bytes(s),
        "standard total (+ output)": standard_bytes(s),
        "numpy standard total (S, P, temp, output)": numpy_standard_bytes(s),
        "streaming working set (all threads)": threads * tile_working_set(Br, Bc, s.D),
        "streaming total (+ output)": streaming_bytes(s, Br, Bc, threads),
        "output O + LSE": output_bytes(s),
        "K/V inputs": kv_bytes(s),
        "GQA copy of K/V (repeat_kv)": gqa_copy_bytes(s),
    }
