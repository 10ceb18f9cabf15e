"""K/V whose chosen tiles are unreadable: a direct check of which tiles a kernel skips.

A skipped tile must cost nothing, so it must not be read. The arrays built here live in an
anonymous ``mmap``; the pages of the tiles named "guarded" are then ``mprotect``-ed to
PROT_NONE, so a single load from them ends the process with SIGSEGV. A kernel run that
returns proves it never touched those tiles; the control (guarding a tile some row sees)
proves that a read is caught. Run it in a subprocess (``python -m tests.guarded CASE``):
the test reads the exit status.

Each case is one call, its Lq rows at ``q_offset``.. against the whole K/V (one Q block
unless ``Br`` cuts it into several); the tiles to guard are exactly those none of its rows
sees: the dense ``visible_mask`` decides, not the kernels' spans. A tile must fill whole
pages: Bc * D * 4 bytes a multiple of the page size, and Lk a multiple of Bc.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import sys

import numpy as np

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def guarded_kv(B: int, Hkv: int, Lk: int, D: int, Bc: int, guard, seed: int = 0):
    """Random float32 K, V [B, Hkv, Lk, D] in mmap'ed memory; the KV tiles j in ``guard``
    (keys [j*Bc, (j+1)*Bc) of every head) are made unreadable in both. Returns (k, v, keep):
    keep holds the mmaps, which must outlive the arrays."""
    tile_bytes = Bc * D * 4
    if tile_bytes % PAGE or Lk % Bc:
        raise ValueError(f"a tile of Bc={Bc} x D={D} floats must fill whole pages of {PAGE} "
                         f"bytes, and Lk={Lk} must be a multiple of Bc")
    rng = np.random.default_rng(seed)
    out, keep = [], []
    for _ in range(2):
        buf = mmap.mmap(-1, B * Hkv * Lk * D * 4, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        x = np.frombuffer(buf, np.float32).reshape(B, Hkv, Lk, D)
        x[:] = rng.standard_normal(x.shape)
        base = x.ctypes.data
        for bh in range(B * Hkv):
            for j in guard:
                addr = base + (bh * Lk + j * Bc) * D * 4
                if _libc.mprotect(addr, tile_bytes, 0) != 0:  # PROT_NONE
                    raise OSError(ctypes.get_errno(), "mprotect failed")
        out.append(x)
        keep.append(buf)
    return out[0], out[1], keep


def unseen_tiles(Lq: int, Lk: int, Bc: int, q_offset: int, mask: dict) -> list[int]:
    """The KV tiles in which no row of the block sees a key, by the dense mask."""
    from attnviz.masks import visible_mask

    geo = {k: v for k, v in mask.items() if k in ("window", "sinks", "prefix", "doc_ids")}
    vis = visible_mask(Lq, Lk, causal=mask.get("causal", True), q_offset=q_offset, **geo)
    return [j for j in range(Lk // Bc) if not vis[:, j * Bc:(j + 1) * Bc].any()]


def run_case(case: dict) -> None:
    """Run the streaming kernel on one Q block with the tiles ``case["guard"]`` unreadable,
    and check the result against the float64 oracle on ordinary copies of K/V."""
    from kernels import streaming_attention
    from tests.helpers import assert_matches_oracle

    B, Hq, Hkv, Lq, Lk, D = (case[x] for x in ("B", "Hq", "Hkv", "Lq", "Lk", "D"))
    Bc, q_offset = case["Bc"], case["q_offset"]
    mask = dict(case.get("mask", {}))
    if "doc_ids" in mask:
        mask["doc_ids"] = np.asarray(mask["doc_ids"], np.int64)
    k, v, _keep = guarded_kv(B, Hkv, Lk, D, Bc, case["guard"], seed=case.get("seed", 0))
    q = np.random.default_rng(1).standard_normal((B, Hq, Lq, D)).astype(np.float32)
    out, lse = streaming_attention(q, k, v, q_offset=q_offset, q_block=case.get("Br", Lq),
                                   kv_block=Bc, return_lse=True, check_finite=False, **mask)
    # the oracle reads only the keys the block sees, copied into ordinary arrays (the unseen
    # keys stay 0: any value would do, the mask leaves them out)
    seen = np.setdiff1d(np.arange(Lk // Bc), case["guard"])
    rows = np.concatenate([np.arange(j * Bc, (j + 1) * Bc) for j in seen])
    full_k = np.zeros((B, Hkv, Lk, D), np.float32)
    full_v = np.zeros((B, Hkv, Lk, D), np.float32)
    full_k[:, :, rows], full_v[:, :, rows] = k[:, :, rows], v[:, :, rows]
    assert_matches_oracle(out, lse, q, full_k, full_v, q_offset=q_offset, **mask)

if __name__ == "__main__":
    for spec in json.loads(sys.argv[1]):
        run_case(spec)
        print("ok", spec["name"], flush=True)
