"""The footprint model against arrays actually allocated, and its headline numbers."""
from __future__ import annotations

import numpy as np

from attnviz import memory
from attnviz.memory import Shape


def test_seed_document_figures():
    """The seed note: 128x128 scores are 64 KiB, 1024x1024 are 4 MiB per head; a 32x64
    block is 8 KiB."""
    assert memory.scores_bytes(Shape(1, 1, 1, 128, 128, 64)) == 64 * 2**10
    assert memory.scores_bytes(Shape(1, 1, 1, 1024, 1024, 64)) == 4 * 2**20
    assert 4 * 32 * 64 == 8 * 2**10


def test_model_matches_allocated_arrays():
    s = Shape(B=2, Hq=8, Hkv=2, Lq=300, Lk=500, D=64)
    S = np.empty((s.B, s.Hq, s.Lq, s.Lk), np.float32)
    O = np.empty((s.B, s.Hq, s.Lq, s.D), np.float32)
    lse = np.empty((s.B, s.Hq, s.Lq), np.float32)
    assert memory.scores_bytes(s) == S.nbytes
    assert memory.output_bytes(s) == O.nbytes + lse.nbytes
    k = np.empty((s.B, s.Hkv, s.Lk, s.D), np.float32)
    assert memory.gqa_copy_bytes(s) == 2 * np.repeat(k, s.Hq // s.Hkv, axis=1).nbytes
    assert memory.kv_bytes(s) == 2 * k.nbytes
    assert memory.gqa_copy_bytes(Shape(1, 4, 4, 8, 8, 8)) == 0


def test_streaming_does_not_grow_with_lk():
    a = memory.streaming_bytes(Shape(1, 8, 8, 1, 1024, 128), 64, 64, threads=2)
    b = memory.streaming_bytes(Shape(1, 8, 8, 1, 131072, 128), 64, 64, threads=2)
    assert a == b
    assert memory.standard_bytes(Shape(1, 8, 8, 32768, 32768, 128)) > 32 * 2**30
