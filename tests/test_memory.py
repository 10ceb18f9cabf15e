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


def test_decode_task_terms_are_what_the_decode_kernel_allocates():
    """The decode caption's terms, against the arrays ``decode_kernel`` allocates per task
    (its m, l, acc are views of the chunk's partial state, counted apart)."""
    g, Bc, D = 4, 96, 64
    Qg = np.empty((g, D), np.float32)
    qpos = np.full(g, 7)
    sink_c = np.full(g, np.float32(-np.inf))
    S = np.empty(2 * g * Bc, np.float32)  # S and P~ tiles
    alpha = np.empty(g, np.float32)
    allocated = Qg.nbytes + qpos.nbytes + sink_c.nbytes + S.nbytes + alpha.nbytes
    s = Shape(B=1, Hq=8 * g, Hkv=8, Lq=1, Lk=3000, D=D)
    assert memory.task_bytes(s, 64, Bc) == allocated  # Br does not apply in decode
    assert memory.task_terms(s, 64, Bc) == memory.decode_working_set_terms(g, Bc, D)
    m_part = np.empty((s.B, s.Hkv, 3, g), np.float32)
    acc_part = np.empty((s.B, s.Hkv, 3, g, D), np.float32)
    assert memory.decode_partials_bytes(s, 3) == 2 * m_part.nbytes + acc_part.nbytes
    out = memory.output_bytes(s)
    assert memory.streaming_bytes(s, 64, Bc, 2, chunks=3) == (
        2 * allocated + 2 * m_part.nbytes + acc_part.nbytes + out)


def test_no_more_working_sets_than_the_kernel_has_tasks():
    """Each task allocates its own buffers, so a call with fewer tasks than threads holds
    only as many working sets as it has tasks: one decode chunk of one KV head on 8 threads
    holds one; a prefill of 2 heads x 3 Q blocks on 4 threads holds four."""
    one_task = Shape(B=1, Hq=4, Hkv=1, Lq=1, Lk=500, D=64)
    assert memory.tasks(one_task, 64, chunks=1) == 1
    assert memory.streaming_bytes(one_task, 64, 128, threads=8) == (
        memory.task_bytes(one_task, 64, 128) + memory.decode_partials_bytes(one_task, 1)
        + memory.output_bytes(one_task))
    assert memory.tasks(one_task, 64, chunks=3) == 3
    prefill = Shape(B=1, Hq=2, Hkv=2, Lq=130, Lk=130, D=32)
    assert memory.tasks(prefill, 64) == 2 * 3
    assert memory.busy_threads(prefill, 64, threads=4) == 4
    assert memory.busy_threads(prefill, 64, threads=16) == 6
    assert memory.streaming_bytes(prefill, 64, 64, threads=16) == (
        6 * memory.task_bytes(prefill, 64, 64) + memory.output_bytes(prefill))


def test_decode_streaming_stays_below_standard():
    """A learner read streaming 36.7 KiB against standard 36 KiB for one decode query: the
    model had counted prefill's Br-row tiles. With the decode path's own buffers, streaming
    is below standard from a few hundred keys on, and far below it at long caches."""
    for Hq, Hkv, D in ((8, 8, 16), (32, 8, 128)):
        for Lk in (512, 4096, 131072):
            s = Shape(1, Hq, Hkv, 1, Lk, D)
            assert memory.streaming_bytes(s, 16, 64, 2) < memory.standard_bytes(s), (s, Lk)
    s = Shape(1, 32, 8, 1, 131072, 128)
    assert memory.streaming_bytes(s, 16, 1024, 2, chunks=4) < memory.standard_bytes(s) / 50
