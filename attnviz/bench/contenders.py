"""The contenders: four ways to compute the same attention, behind one interface.

* ``numpy``           the textbook materialized version in NumPy (S, mask, softmax, @V)
* ``numba_standard``  ``kernels.standard_attention``: S materialized, parallel softmax
* ``numba_streaming`` ``kernels.streaming_attention``: online softmax over tiles
* ``torch``           ``torch.nn.functional.scaled_dot_product_attention`` (CPU flash kernel),
                      only when torch is importable (``requirements-bench.txt``); in a
                      process of its own (``torchworker``) when the kernels bound MKL

``Contender.prepare(case, q, k, v)`` does whatever conversion a contender needs *outside* the
timed region (torch tensors, a mask) and returns a zero-argument call returning O
[B, Hq, Lq, D] as a NumPy float32 array: that call is what gets checked and timed.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import memory
from ..masks import row_spans, visible_mask
from . import torchworker
from .cases import Case

Call = Callable[[], np.ndarray]


@dataclass(frozen=True)
class Contender:
    name: str  # short key: CLI, JSON
    label: str  # for tables
    prepare: Callable[[Case, np.ndarray, np.ndarray, np.ndarray], Call]
    predict_bytes: Callable[[Case], int | None]  # the memory model's extra bytes, or None
    # reason to skip a case before running it (e.g. predicted memory above what is free)
    skip_reason: Callable[[Case], str | None] = lambda case: None


# --- NumPy, textbook ---------------------------------------------------------------------------

def numpy_standard_attention(q, k, v, *, causal=True, q_offset=None, window=None, scale=None):
    """Materialized attention in plain NumPy, the way a textbook writes it.

    q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] float32 -> O [B, Hq, Lq, D] float32. GQA by
    indexing: the g = Hq / Hkv query heads of a KV head are a broadcast axis against that
    head, K/V are never repeated. Holds S, a temporary and P at once: three [B, Hq, Lq, Lk]
    float32 matrices (``memory.numpy_standard_bytes``).
    """
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    scale = np.float32(1.0 / np.sqrt(D) if scale is None else scale)
    Qg = q.reshape(B, Hkv, g, Lq, D)  # query heads grouped by their KV head (a view)
    S = Qg @ k[:, :, None].swapaxes(-1, -2)  # [B, Hkv, g, Lq, Lk]
    S *= scale
    if causal:
        offset = Lk - Lq if q_offset is None else q_offset
        vis = visible_mask(Lq, Lk, causal=True, q_offset=offset, window=window or 0)
        S = np.where(vis, S, np.float32(-np.inf))  # [B, Hkv, g, Lq, Lk]
    m = S.max(axis=-1, keepdims=True)  # row max, [B, Hkv, g, Lq, 1]
    m[~np.isfinite(m)] = 0.0  # a row that sees no key: P = 0, not NaN
    P = np.exp(S - m)  # S, S - m and P alive together: the peak
    del S
    l = P.sum(axis=-1, keepdims=True)
    P /= np.where(l > 0, l, np.float32(1.0))
    O = P @ v[:, :, None]  # [B, Hkv, g, Lq, D]
    return O.reshape(B, Hq, Lq, D)


# --- torch SDPA --------------------------------------------------------------------------------

def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def torch_mask(case: Case):
    """How to ask torch SDPA for exactly ``case``'s mask: ``("none", None)``,
    ``("is_causal", None)`` or ``("explicit", bool [Lq, Lk])`` (True = attend).

    torch's ``is_causal=True`` is *top-left* aligned (row r sees keys <= r), which equals the
    kernels' bottom-right causal mask only when q_offset == 0 (Lq == Lk by default). A
    causal mask every row sees all of (decode: one row at the end) needs no mask at all.
    """
    if not case.causal:
        return "none", None
    lo, hi = row_spans(case.Lq, case.Lk, causal=True, q_offset=case.offset, window=case.window)
    if (lo == 0).all() and (hi == case.Lk).all():
        return "none", None
    if case.offset == 0 and not case.window:
        return "is_causal", None
    return "explicit", visible_mask(case.Lq, case.Lk, causal=True, q_offset=case.offset,
                                    window=case.window)


def torch_in_process() -> bool:
    """Whether PyTorch may run in this process: not when the kernels bound oneMKL here,
    whose global symbols would capture PyTorch's own MKL (``kernels._blaslib``)."""
    from kernels import BLAS

    return BLAS.name != "mkl"


def _prepare_torch(case: Case, q, k, v) -> Call:
    kind, mask = torch_mask(case)
    if not torch_in_process():
        w = torchworker.worker()
        w.ask("load", q, k, v, kind == "is_causal", mask)
        return torchworker.RemoteCall(w)
    call = torchworker.sdpa_call(q, k, v, kind == "is_causal", mask)
    return lambda: call().numpy()


# --- Numba kernels -----------------------------------------------------------------------------

def _standard_limit() -> int:
    """standard_attention's max_bytes: its default (half of RAM), or less when less is free,
    so that its own guard -- not the OOM killer -- refuses what does not fit."""
    import psutil

    from kernels import DEFAULT_MEMORY_FRACTION

    total, free = psutil.virtual_memory().total, psutil.virtual_memory().available
    return int(min(DEFAULT_MEMORY_FRACTION * total, 0.8 * free))


def _prepare_numba_standard(case: Case, q, k, v) -> Call:
    from kernels import standard_attention

    limit = _standard_limit()
    kw = case.mask_kwargs()
    return lambda: standard_attention(q, k, v, **kw, check_finite=False, max_bytes=limit)


def make_streaming(q_block: int | None = None, kv_block: int | None = None,
                   name: str = "numba_streaming", label: str = "Numba streaming",
                   check_finite: bool = False) -> Contender:
    """The streaming kernel with given tile sizes (None: the kernels' default per D);
    ``check_finite``: as a user calls it by default (the cost of the finiteness check)."""

    def prepare(case: Case, q, k, v) -> Call:
        from kernels import streaming_attention

        kw = case.mask_kwargs()
        return lambda: streaming_attention(q, k, v, **kw, q_block=q_block, kv_block=kv_block,
                                           check_finite=check_finite)

    def predict(case: Case) -> int:
        return streaming_predicted_bytes(case, *blocks_for(case.D, q_block, kv_block,
                                                            Lq=case.Lq, Lk=case.Lk))

    return Contender(name, label, prepare, predict)


def blocks_for(D: int, q_block: int | None, kv_block: int | None, *, Lq: int, Lk: int
               ) -> tuple[int, int]:
    """(Br, Bc) the streaming kernel will use for ``Lq`` query rows against ``Lk`` keys
    (decode, Lq == 1, has its own tuned Bc; prefills against many keys their own blocks)."""
    from kernels import decode_block, default_blocks

    Br, Bc = default_blocks(D, Lk)
    return (q_block or Br, kv_block or (decode_block(D) if Lq == 1 else Bc))


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def decode_chunks(case: Case, Bc: int) -> int:
    """Number of split-KV chunks C the decode path makes (asked of the kernel itself)."""
    from kernels import decode_split

    return decode_split(case.B, case.Hkv, case.Lk, Bc, q_offset=case.offset,
                        causal=case.causal, window=case.window or 0)[1]


def streaming_predicted_bytes(case: Case, Br: int, Bc: int) -> int:
    """memory.py's model for the streaming kernel: the working sets of its tasks, the decode
    path's partial states, the output."""
    chunks = decode_chunks(case, Bc) if case.Lq == 1 else 1
    return memory.streaming_bytes(case.shape, Br, Bc, _threads(), chunks)


def _too_big_for_free_memory(need: int) -> str | None:
    import psutil

    free = psutil.virtual_memory().available
    if need > 0.8 * free:
        return (f"skipped by predicted memory: {need / 2**30:.1f} GiB > 80% of the "
                f"{free / 2**30:.1f} GiB available")
    return None


NUMPY = Contender(
    "numpy", "NumPy standard",
    prepare=lambda case, q, k, v: (
        lambda: numpy_standard_attention(q, k, v, **case.mask_kwargs())),
    predict_bytes=lambda case: memory.numpy_standard_bytes(case.shape),
    skip_reason=lambda case: _too_big_for_free_memory(memory.numpy_standard_bytes(case.shape)),
)
NUMBA_STANDARD = Contender(
    "numba_standard", "Numba standard", _prepare_numba_standard,
    predict_bytes=lambda case: memory.standard_bytes(case.shape),
)
NUMBA_STREAMING = make_streaming()
TORCH = Contender("torch", "torch SDPA", _prepare_torch, predict_bytes=lambda case: None)

ALL_NAMES = ("numpy", "numba_standard", "numba_streaming", "torch", "numba_streaming_checked")
DEFAULT_NAMES = ALL_NAMES[:4]  # the checked variant is asked for by name (--contenders)


def default_contenders(names=None, q_block=None, kv_block=None) -> list[Contender]:
    """The contenders by name (default: the four of DEFAULT_NAMES, torch only when
    importable)."""
    pool = {"numpy": NUMPY, "numba_standard": NUMBA_STANDARD,
            "numba_streaming": make_streaming(q_block, kv_block), "torch": TORCH,
            "numba_streaming_checked": make_streaming(
                q_block, kv_block, "numba_streaming_checked",
                "Numba streaming, check_finite=True", check_finite=True)}
    if names is None:
        names = [n for n in DEFAULT_NAMES if n != "torch" or torch_available()]
    unknown = [n for n in names if n not in pool]
    if unknown:
        raise ValueError(f"unknown contenders {unknown}; choose from {', '.join(ALL_NAMES)}")
    return [pool[n] for n in names]
