"""Public entry points: validate, allocate outputs, dispatch to a jitted driver."""
from __future__ import annotations

import os

import numpy as np

from . import tuning
from .standard import standard_kernel
from .streaming import decode_kernel, prefill_kernel
from .tile import cdiv, mask_spans, visible_tiles
from .validate import MaskSpec, check_block, check_qkv, check_scale, mask_spec, name_non_finite

# standard_attention refuses a score matrix above this fraction of physical memory.
DEFAULT_MEMORY_FRACTION = 0.5


def default_blocks(D: int, Lk: int | None = None) -> tuple[int, int]:
    """(q_block, kv_block) a prefill against ``Lk`` keys uses when the caller gives none:
    measured on this host by the autotune when it has run (``kernels.tuning``: per length
    class of Lk, ``tuning.LK_CLASSES``), else the built-in table (nearest D)."""
    return tuning.active().blocks_for(D, Lk)


def decode_block(D: int) -> int:
    """The KV block Bc the decode path (Lq == 1) uses when the caller gives none: tuned per
    host (``kernels.tuning``), else the prefill's."""
    return tuning.active().decode_for(D)[0]


def tile_products(Lq: int, D: int, tuned: tuning.Tuning | None = None) -> tuple[bool, bool]:
    """How a call with Lq query rows computes each tile's two products, (for S = Q K^T, for
    P~ V): plain loops (True) or BLAS (False). Decode (Lq == 1) takes the pair tuned per
    host and thread count for its few-row tiles (``kernels/smallmm.py``; the built-in pair
    where no tuning is stored); prefill's tiles use BLAS. ``tuned``: the tuning to read
    (default: the one in force), so a call reads one tuning for all its choices."""
    if Lq != 1:
        return (False, False)
    return (tuned or tuning.active()).decode_for(D)[1]


def tuning_summary() -> dict:
    """The tuned values in force (blocks per D, decode tiles as loops or BLAS, the decode
    chunk size), the host key they are valid for and where they come from; ``"text"`` is one
    line for people."""
    return tuning.summary()


def _physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _num_threads() -> int:
    import numba

    return numba.get_num_threads()


def decode_split(B: int, Hkv: int, Lk: int, Bc: int, *, q_offset: int, causal: bool = True,
                 window: int = 0, sinks: int = 0, prefix: int = 0,
                 doc_ids=None) -> tuple[int, int]:
    """How the decode path cuts the visible keys: (KV tiles per chunk, number of chunks C).

    Enough chunks that B * Hkv * C tasks keep every thread busy (two per thread), none
    shorter than the decode chunk size (``kernels.tuning``: measured per host, else 512
    keys). The kernel computes each chunk's partial (m, l, acc) and merges them; the memory
    model needs C for the partials' size. The visible tiles are the sink tiles, then the
    main run (``tile.visible_tiles``).
    """
    docs = None if doc_ids is None else tuple(doc_ids)
    mk = MaskSpec(causal, q_offset, window, sinks, prefix, docs).geometry()
    return _split(B, Hkv, Lk, Bc, q_offset, mk, tuning.active().decode_min_chunk)


def _split(B: int, Hkv: int, Lk: int, Bc: int, q_offset: int, mk, min_chunk: int
           ) -> tuple[int, int]:
    """``decode_split`` for the Mask ``mk`` and chunks of at least ``min_chunk`` keys."""
    pos = np.full(1, q_offset, np.int64)
    s_hi, lo, hi = mask_spans(q_offset, Lk, mk)
    j_sink, j_lo, j_hi = visible_tiles(pos, Lk, Bc, mk)
    tiles = max(j_sink + j_hi - j_lo, 1)
    tasks_per_head = max(1, 2 * _num_threads() // max(1, B * Hkv))
    n_chunks = max(1, min(tasks_per_head, (s_hi + hi - lo) // min_chunk))
    per = cdiv(tiles, n_chunks)
    return per, cdiv(tiles, per)


def _empty_result(q, return_lse):
    B, Hq, Lq, D = q.shape
    out = np.zeros((B, Hq, Lq, D), np.float32)
    lse = np.zeros((B, Hq, Lq), np.float32)
    return (out, lse) if return_lse else out


def streaming_attention(q, k, v, *, causal=True, q_offset=None, window=None, sinks=None,
                        prefix=None, doc_ids=None, sink_logits=None, scale=None,
                        q_block=None, kv_block=None, return_lse=False, check_finite=True):
    """Exact attention by block-wise streaming (online softmax), never materializing S.

    Parameters
    ----------
    q : [B, Hq, Lq, D]; k, v : [B, Hkv, Lk, D]; float16, float32 or float64.
    causal : query row r (absolute position ``q_offset + r``) sees keys ``<= q_offset + r``.
    q_offset : default ``Lk - Lq`` (bottom-right alignment, as a KV cache needs); allowed in
        ``[1 - Lq, Lk - 1]``. Rows before position 0 see no key: O = 0, LSE = -inf.
    window : sliding window W (needs causal): keys ``>= q_offset + r - W + 1`` only.
    sinks : S (needs window): the first S keys stay visible to every row (StreamingLLM); a
        row at p sees [0, S) and [p - W + 1, p], causally.
    prefix : P (causal, no window): prefix-LM; keys ``<= max(p, P - 1)``.
    doc_ids : int [Lk], non-decreasing (causal): packed documents; a query at p sees only
        keys of its own document, causally; a position outside [0, Lk) sees nothing.
        Tiles across documents are skipped.
    sink_logits : float [Hq]: one extra logit per query head in every row's softmax
        denominator, adding nothing to O (gpt-oss). A row that sees no key gets O = 0 and
        LSE = sink_logits[h].
    Unsupported combinations raise ValueError (see ``validate.mask_spec``).
    scale : default ``1 / sqrt(D)``.
    q_block, kv_block : tile sizes Br, Bc; any positive ints (default per D and length:
        ``default_blocks`` for prefill, ``decode_block`` for decode; measured on this host by
        the autotune).
    return_lse : also return LSE = m + log(l) [B, Hq, Lq], natural log.
    check_finite : raise a ValueError naming the input when a NaN/Inf in q, k or v reached
        the result. The result is checked (O and LSE: no second pass over the KV cache); the
        inputs are scanned only then, to name one. With False, a NaN that a row sees makes
        that row NaN (never the zeros of a row that sees no key).

    Lq == 1 runs the split-KV decode path; Lq > 1 the Q-block-parallel prefill path.
    """
    q, k, v = check_qkv(q, k, v, ndim=4, finite=False)
    B, Hq, Lq, D = q.shape
    Lk = k.shape[2]
    mask = mask_spec(Lq, Lk, causal, q_offset, window, sinks=sinks, prefix=prefix,
                     doc_ids=doc_ids, sink_logits=sink_logits, Hq=Hq)
    scale = np.float32(check_scale(scale, D))
    tuned = tuning.active()
    Br0, Bc0 = tuned.blocks_for(D, Lk)
    Bc_dec = tuned.decode_for(D)[0]
    Br = check_block("q_block", q_block, Br0)
    Bc = check_block("kv_block", kv_block, Bc_dec if Lq == 1 else Bc0)
    if Lq == 0:
        return _empty_result(q, return_lse)
    out = np.empty((B, Hq, Lq, D), np.float32)
    lse = np.empty((B, Hq, Lq), np.float32)
    mk, sink = mask.geometry(), mask.sink_array(Hq)
    if Lq == 1:
        per, _ = _split(B, k.shape[1], Lk, Bc, mask.q_offset, mk, tuned.decode_min_chunk)
        decode_kernel(q, k, v, out, lse, scale, mask.q_offset, mk, sink, Bc, per,
                      tile_products(Lq, D, tuned))
    else:
        prefill_kernel(q, k, v, out, lse, scale, mask.q_offset, mk, sink, Br, Bc)
    if check_finite:
        _check_result(out, lse, q, k, v)
    return (out, lse) if return_lse else out


def _check_result(out, lse, q, k, v) -> None:
    """A NaN/Inf input that reached the result makes O or LSE NaN or +-Inf (LSE = -inf is a
    row that sees no key, and such a row's O is 0). Only then are the inputs scanned, to name
    the one at fault: a finite result costs one pass over O and LSE, not over the KV cache."""
    if all_finite(out) and not (np.isnan(lse).any() or np.isposinf(lse).any()):
        return
    name_non_finite(q, k, v)


def all_finite(x: np.ndarray) -> bool:
    """No NaN or Inf in ``x``; in blocks, so the temporary stays small (the peak memory of a
    call is the output plus a few MiB, BENCHMARKS.md)."""
    flat = x.reshape(-1)
    step = 1 << 16
    return all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step))


def standard_attention(q, k, v, *, causal=True, q_offset=None, window=None, sinks=None,
                       prefix=None, doc_ids=None, sink_logits=None, scale=None,
                       return_lse=False, check_finite=True, max_bytes=None):
    """Exact attention the standard way: materialize S = scale Q K^T [B, Hq, Lq, Lk] float32,
    softmax it into P in place, O = P V. Same arguments and masks as ``streaming_attention``.

    check_finite : as in ``streaming_attention`` (the result is checked, then the inputs).
    max_bytes : refuse (MemoryError naming the sizes) when the score matrix would exceed
        this many bytes; default ``DEFAULT_MEMORY_FRACTION`` of physical memory.
    """
    q, k, v = check_qkv(q, k, v, ndim=4, finite=False)
    B, Hq, Lq, D = q.shape
    Lk = k.shape[2]
    mask = mask_spec(Lq, Lk, causal, q_offset, window, sinks=sinks, prefix=prefix,
                     doc_ids=doc_ids, sink_logits=sink_logits, Hq=Hq)
    scale = np.float32(check_scale(scale, D))
    if Lq == 0:
        return _empty_result(q, return_lse)
    limit = int(DEFAULT_MEMORY_FRACTION * _physical_memory()) if max_bytes is None else max_bytes
    need = B * Hq * Lq * Lk * 4
    if need > limit:
        raise MemoryError(
            f"standard attention would materialize a [{B}, {Hq}, {Lq}, {Lk}] float32 score "
            f"matrix of {need / 2**30:.2f} GiB, above the limit of {limit / 2**30:.2f} GiB "
            "(max_bytes); use streaming_attention, whose memory does not grow with Lk"
        )
    S = np.empty((B, Hq, Lq, Lk), np.float32)
    out = np.empty((B, Hq, Lq, D), np.float32)
    lse = np.empty((B, Hq, Lq), np.float32)
    standard_kernel(q, k, v, S, out, lse, scale, mask.q_offset, mask.geometry(),
                    mask.sink_array(Hq))
    if check_finite:
        _check_result(out, lse, q, k, v)
    return (out, lse) if return_lse else out


def warmup() -> None:
    """Compile (or load from the cache) every kernel specialization the app and tests use.

    Numba specializes on argument types, not sizes: one tiny call per path suffices.
    """
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 5, 16), dtype=np.float32)
    k = rng.standard_normal((1, 1, 7, 16), dtype=np.float32)
    streaming_attention(q, k, k, q_block=2, kv_block=3)  # prefill
    streaming_attention(q[:, :, :1], k, k, kv_block=3)  # decode
    standard_attention(q, k, k)
    from .backward import standard_attention_backward, streaming_attention_backward

    O, lse = streaming_attention(q, k, k, return_lse=True)
    streaming_attention_backward(q, k, k, O, lse, O, q_block=2, kv_block=3)  # the gradients
    standard_attention_backward(q, k, k, O, lse, O)
