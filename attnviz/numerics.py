"""The numerics lab: what low precision does to attention, measured live.

Inputs are rounded to float16 or bfloat16 by a dtype cast (NumPy's float16; ``ml_dtypes``'s
bfloat16), never by a hand-written rounding routine. Four experiments, each a pure function
returning plain arrays (the pictures are in ``attnviz.labplots``):

* ``error_sweep``: FlashAttention's way of measuring error (its tests compare the flash output
  and a standard PyTorch output, both in low precision, to a reference in higher precision):
  ``max |streaming(low) - float64|`` beside ``max |standard(low) - float64|`` over a sweep of
  logit scales. streaming(low): our kernel on the rounded inputs (float32 inside), its O
  stored in the low dtype as FlashAttention stores it; standard(low): the textbook
  computation with S, P, l and O each stored in the low dtype; the float64 oracle runs on the
  same rounded inputs. The floor is the exact O rounded to the low dtype.
* ``accumulation``: P~ V summed key by key into a low-precision accumulator (an emulation:
  NumPy's ``cumsum`` in that dtype rounds after every add, as an MMA with a half-precision
  accumulator would) against the same sums in float32. Why kernels keep acc in float32.
* ``overflow``: softmax without subtracting the max: exp overflows float32 above
  ln(3.4e38) = 88.7 and float16 above ln(65504) = 11.1 (bfloat16 has float32's range).
* ``masked_rows``: a row that sees no key has m = -inf, and exp(S - m) = exp(-inf - -inf)
  is NaN without the guard; with it (subtract 0 when m = -inf) P~ = 0, l = 0, O = 0,
  LSE = -inf -- what the kernels return.
"""
from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np

from kernels import streaming_attention

from .reference import attention_reference

LOW = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
OVERFLOW_DTYPES = {"float32": np.dtype(np.float32), **LOW}
LOGIT_STDS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)


def low_dtype(name: str) -> np.dtype:
    """The dtype called ``name`` ("float16" or "bfloat16"); ValueError for anything else."""
    if name not in LOW:
        raise ValueError(f"dtype must be one of {', '.join(LOW)}, got {name!r}")
    return LOW[name]


def exp_limit(dtype) -> float:
    """The largest x with a finite exp(x) in ``dtype``: ln(max) (88.72 float32, 11.09 float16)."""
    return float(np.log(np.float64(ml_dtypes.finfo(dtype).max)))


def _inputs(Lq, Lk, D, seed):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((Lq, D))
    k = rng.standard_normal((Lk, D))
    v = rng.standard_normal((Lk, D))
    return q, k, v


def standard_low(q, k, v, dtype, *, causal=True) -> np.ndarray:
    """Textbook attention on q [Lq, D], k/v [Lk, D] with every intermediate stored in
    ``dtype``: S = Q K^T / sqrt(D), the max subtracted, P = exp(S - m), l = rowsum(P),
    O = (P / l) V. Bottom-right causal mask as the kernels' default. Returns O [Lq, D] in
    ``dtype`` (NaN where the low dtype overflowed)."""
    dt = np.dtype(dtype)
    q, k, v = (np.asarray(x).astype(dt) for x in (q, k, v))
    Lq, D = q.shape
    Lk = k.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        S = (q @ k.T).astype(dt) * dt.type(1.0 / np.sqrt(D))  # [Lq, Lk], in dt
        S = S.astype(dt)
        if causal:
            pos = np.arange(Lq)[:, None] + (Lk - Lq)
            S = np.where(np.arange(Lk)[None, :] <= pos, S, dt.type(-np.inf)).astype(dt)
        m = S.max(axis=1, keepdims=True)
        P = np.exp((S - m).astype(dt)).astype(dt)
        l = P.sum(axis=1, keepdims=True, dtype=dt)
        O = ((P / l).astype(dt) @ v).astype(dt)
    return O


@dataclass(frozen=True)
class ErrorSweep:
    """max |O - O_float64| per logit scale (NaN where a method returned NaN/Inf)."""

    dtype: str
    logit_std: np.ndarray  # [n] the std of the scores S
    streaming: np.ndarray  # [n] our kernel on rounded inputs, O stored in dtype
    streaming_fp32: np.ndarray  # [n] the same O kept in float32: the algorithm's own error
    standard: np.ndarray  # [n] S, P, l, O all stored in dtype
    floor: np.ndarray  # [n] the exact O, rounded to dtype: no method can beat it
    standard_nonfinite: np.ndarray  # [n] count of NaN/Inf entries in the standard O


def _max_err(O, ref) -> float:
    O = np.asarray(O, np.float64)
    return float(np.abs(O - ref).max()) if np.isfinite(O).all() else float("nan")


def error_sweep(dtype: str, *, logit_stds=LOGIT_STDS, L: int = 256, D: int = 64,
                seed: int = 0, causal: bool = True) -> ErrorSweep:
    """FlashAttention's error measure on q [L, D] with scores of std ``s`` for each s in
    ``logit_stds`` (q scaled by s; k, v standard normal), inputs rounded to ``dtype``."""
    dt = low_dtype(dtype)
    q0, k, v = _inputs(L, L, D, seed)
    k, v = k.astype(dt), v.astype(dt)
    stream, stream32, std, floor, bad = [], [], [], [], []
    for s in logit_stds:
        q = (s * q0).astype(dt)
        q32, k32, v32 = (x.astype(np.float32) for x in (q, k, v))  # exact: dt fits float32
        O_ref = attention_reference(q32, k32, v32, causal=causal)[0]
        O_fast = streaming_attention(q32[None, None], k32[None, None], v32[None, None],
                                     causal=causal)[0, 0]
        stream.append(_max_err(O_fast.astype(dt), O_ref))
        stream32.append(_max_err(O_fast, O_ref))
        O_std = standard_low(q, k, v, dt, causal=causal).astype(np.float64)
        std.append(_max_err(O_std, O_ref))
        bad.append(int((~np.isfinite(O_std)).sum()))
        floor.append(_max_err(O_ref.astype(dt), O_ref))
    return ErrorSweep(dtype, np.asarray(logit_stds, float), np.array(stream),
                      np.array(stream32), np.array(std), np.array(floor), np.array(bad))


@dataclass(frozen=True)
class Accumulation:
    """Error of O = acc / l after the first n keys, acc summed in float32 or in dtype."""

    dtype: str
    n: np.ndarray  # [k] number of keys summed
    err_fp32: np.ndarray  # [k] max |O - O_float64|, acc in float32
    err_low: np.ndarray  # [k] the same, acc in dtype (emulated)


def accumulation(dtype: str, *, Lk: int = 4096, D: int = 64, rows: int = 8,
                 v_mean: float = 1.0, seed: int = 0) -> Accumulation:
    """P~ V accumulated key by key: ``rows`` query rows against the first n of ``Lk`` keys
    (no mask), inputs rounded to ``dtype``; V has mean ``v_mean`` (with 0 the sum is a random
    walk and stays small; with a mean it grows with n, and late small terms fall below the
    accumulator's resolution). P~ = exp(S - m) in float32 with each row's
    final max; l is summed in float32 for both columns, so only acc's dtype differs.
    The low column is an emulation (a ``cumsum`` in dtype: one rounding per add)."""
    dt = low_dtype(dtype)
    q, k, v = _inputs(rows, Lk, D, seed)
    q, k, v = (x.astype(dt).astype(np.float32) for x in (q, k, v + v_mean))
    S = (q @ k.T) / np.float32(np.sqrt(D))  # [rows, Lk] float32
    P = np.exp(S - S.max(axis=1, keepdims=True))  # [rows, Lk] P~ float32
    terms = P[:, :, None] * v[None, :, :]  # [rows, Lk, D] p_n v_n in float32
    l = np.cumsum(P, axis=1, dtype=np.float32)  # [rows, Lk]
    acc32 = np.cumsum(terms, axis=1, dtype=np.float32)
    acc_low = np.cumsum(terms.astype(dt), axis=1, dtype=dt).astype(np.float32)
    ns = np.unique(np.clip(np.round(np.geomspace(16, Lk, 12)).astype(int), 1, Lk))
    e32, elow = [], []
    S64 = (q.astype(np.float64) @ k.T.astype(np.float64)) / np.sqrt(D)
    for n in ns:
        W = np.exp(S64[:, :n] - S64[:, :n].max(axis=1, keepdims=True))
        ref = (W @ v[:n].astype(np.float64)) / W.sum(axis=1, keepdims=True)  # [rows, D]
        e32.append(_max_err(acc32[:, n - 1] / l[:, n - 1, None], ref))
        elow.append(_max_err(acc_low[:, n - 1] / l[:, n - 1, None], ref))
    return Accumulation(dtype, ns, np.array(e32), np.array(elow))


@dataclass(frozen=True)
class Overflow:
    """Softmax of the row ``x + offsets`` (as stored in each dtype) with and without the max
    subtracted, against the exact softmax of that stored row."""

    x: np.ndarray  # [n] the largest logit of the row
    offsets: np.ndarray  # [K] the row is x + offsets
    naive: dict  # dtype name -> [n] max |p - p_exact| without max subtraction (NaN: inf / inf)
    safe: dict  # dtype name -> [n] the same with the max subtracted
    first_bad: dict  # dtype name -> smallest x whose naive softmax is not finite (or None)
    limit: dict  # dtype name -> ln(max of dtype), where exp(x) overflows


def overflow(xs=None, offsets=(0.0, -0.5, -1.0, -2.0, -3.0, -4.0)) -> Overflow:
    """exp(S) / sum exp(S) computed in float32, float16 and bfloat16 for rows whose top
    logit is x, against the exact softmax of the same stored row (float64)."""
    xs = np.linspace(0.0, 100.0, 401) if xs is None else np.asarray(xs, float)
    off = np.asarray(offsets, float)
    naive, safe, first_bad, limit = {}, {}, {}, {}
    for name, dt in OVERFLOW_DTYPES.items():
        S = (xs[:, None] + off[None, :]).astype(dt)  # [n, K] the rows, stored in dt
        S64 = S.astype(np.float64)  # the exact softmax of the stored row (rounding of the
        exact = np.exp(S64 - S64.max(axis=1, keepdims=True))  # logits is not the subject)
        exact /= exact.sum(axis=1, keepdims=True)
        with np.errstate(over="ignore", invalid="ignore"):
            e = np.exp(S).astype(dt)
            p_naive = (e / e.sum(axis=1, keepdims=True, dtype=dt)).astype(dt)
            e = np.exp((S - S.max(axis=1, keepdims=True)).astype(dt)).astype(dt)
            p_safe = (e / e.sum(axis=1, keepdims=True, dtype=dt)).astype(dt)
        errs = []
        for p in (p_naive, p_safe):
            p = p.astype(np.float64)
            with np.errstate(invalid="ignore"):
                err = np.abs(p - exact).max(axis=1)
            err[~np.isfinite(p).all(axis=1)] = np.nan
            errs.append(err)
        naive[name], safe[name] = errs
        bad = np.flatnonzero(np.isnan(errs[0]))
        first_bad[name] = float(xs[bad[0]]) if bad.size else None
        limit[name] = exp_limit(dt)
    return Overflow(xs, off, naive, safe, first_bad, limit)


@dataclass(frozen=True)
class MaskedRows:
    """One score tile whose masked rows see no key, through the softmax both ways."""

    S: np.ndarray  # [Br, Bc] float32 scores, -inf where masked
    m: np.ndarray  # [Br] row max (-inf for a row that sees nothing)
    P_raw: np.ndarray  # [Br, Bc] exp(S - m): NaN in the empty rows
    l_raw: np.ndarray  # [Br]
    O_raw: np.ndarray  # [Br, D]
    lse_raw: np.ndarray  # [Br]
    P: np.ndarray  # [Br, Bc] exp(S - m_ref), m_ref = 0 where m = -inf
    l: np.ndarray
    O: np.ndarray
    lse: np.ndarray
    O_kernel: np.ndarray  # [Br, D] streaming_attention on the same rows
    lse_kernel: np.ndarray  # [Br]


def masked_rows(*, Br: int = 4, Bc: int = 6, D: int = 8, empty=(1, 3),
                seed: int = 0) -> MaskedRows:
    """A [Br, Bc] tile of causal scores where the rows in ``empty`` see no key: those rows
    are placed before position 0 (q_offset < 0), as in chunked prefill with a top-left
    diagonal. The guard's answer is checked against the kernel's on the same inputs."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((Br, D)).astype(np.float32)
    k = rng.standard_normal((Bc, D)).astype(np.float32)
    v = rng.standard_normal((Bc, D)).astype(np.float32)
    S = (q @ k.T) / np.float32(np.sqrt(D))
    vis = np.ones((Br, Bc), bool)
    vis[list(empty)] = False
    S = np.where(vis, S, np.float32(-np.inf)).astype(np.float32)
    m = S.max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        P_raw = np.exp(S - m[:, None])  # -inf - -inf = NaN
        l_raw = P_raw.sum(axis=1)
        O_raw = (P_raw @ v) / l_raw[:, None]
        lse_raw = m + np.log(l_raw)
        m_ref = np.where(m == -np.inf, np.float32(0.0), m)  # the guard
        P = np.exp(S - m_ref[:, None])
        l = P.sum(axis=1)
        seen = l > 0
        O = np.where(seen[:, None], (P @ v) / np.where(seen, l, 1)[:, None], 0).astype(
            np.float32)
        lse = np.where(seen, m + np.log(np.where(seen, l, 1)), -np.inf).astype(np.float32)
    # the kernel on the same rows: the others see every key (no mask); the empty ones sit
    # before position 0 (q_offset = -n), with one more row at position 0 to make it legal
    O_k = np.empty((Br, D), np.float32)
    lse_k = np.empty(Br, np.float32)
    empty = sorted(empty)
    full = [r for r in range(Br) if r not in empty]
    kv = (k[None, None], v[None, None])
    o, s = streaming_attention(q[full][None, None], *kv, causal=False, return_lse=True)
    O_k[full], lse_k[full] = o[0, 0], s[0, 0]
    qe = np.concatenate([q[empty], q[:1]])  # [n + 1, D]
    o, s = streaming_attention(qe[None, None], *kv, q_offset=-len(empty), return_lse=True)
    O_k[empty], lse_k[empty] = o[0, 0, :-1], s[0, 0, :-1]
    return MaskedRows(S, m, P_raw, l_raw, O_raw, lse_raw, P, l, O, lse, O_k, lse_k)
