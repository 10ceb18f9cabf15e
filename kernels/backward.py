"""The backward pass of exact attention: FlashAttention-2's tiled backward, and the standard
(materializing) baseline beside it.

Given the forward's output O and row log-sum-exp LSE (saved by ``streaming_attention(...,
return_lse=True)``) and the upstream gradient dO, every tile (Q block i, KV block j) is
recomputed from Q, K, V, never stored:

    S   = scale * Q_i K_j^T           (masked entries -inf, as in the forward)
    P   = exp(S - LSE_i)              (the forward's P~ / l: LSE alone normalizes it)
    dP  = dO_i V_j^T
    dS  = P * (dP - D_i),  D_i = rowsum(dO_i * O_i)   (computed once per row, up front)
    dV_j += P^T dO_i;   dK_j += scale * dS^T Q_i;   dQ_i += scale * dS K_j

Five GEMMs per tile against the forward's two: S is recomputed rather than stored, which
keeps memory O(L * D). A sink logit (gpt-oss) only enters through LSE: P then sums to less
than 1 and dS needs nothing else. Rows that see no key (LSE = -inf) have P = 0 and
contribute nothing; skipped tiles (``tile.mask_tile_class``) are never computed.

Loop order (``backward_kernel``): KV blocks outer. A task owns (b, KV head hk, KV block j):
dK_j and dV_j accumulate in that task only, over the g query heads of the group (GQA sums
dk, dv over the group) and every Q block i that sees block j. dQ_i receives a term from
every KV block, i.e. from many tasks. **dQ without races: per-worker partials.** The tasks
are dealt round-robin to W = (number of threads) workers; worker w accumulates into its own
dQ copy (worker 0 into the output), and the W copies are summed at the end. Why not the
other ways: per-task partials would hold Tc copies of dQ (O(L^2 D / Bc): not flat in L);
a separate dQ pass (Q blocks outer) recomputes S and dP, 7 GEMMs per tile instead of 5;
atomics on float32 do not exist in Numba. Per-worker partials cost (W - 1) * |Q| floats
and one add, and the sum order is fixed by W, so results are deterministic for a thread
count.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._config import FASTMATH
from .api import DEFAULT_MEMORY_FRACTION, _physical_memory
from .blas import gemm
from .tile import (
    NEG_INF,
    PARTIAL,
    SKIPPED,
    cdiv,
    exp_shifted,
    mask_max,
    mask_spans,
    mask_tile_class,
)
from .validate import as_float32, check_block, check_finite, check_qkv, check_scale, mask_spec

ROWS = 64  # the standard backward's rows (and keys) per parallel task


@njit(cache=True, fastmath=FASTMATH)
def backward_tile(Qi, Kj, Vj, dOi, lse, Di, qpos, k0, Lk, mk, masked, scale,
                  dKj, dVj, dQi, S, P, dP, dS):
    """One tile of the backward pass: Q block i (rows at positions ``qpos``) against the KV
    tile starting at key ``k0``.

    Inputs:  Qi, dOi [Br, D]; Kj, Vj [Bc, D] float32; lse, Di [Br]; mk the Mask;
             ``masked=False`` promises a FULL tile.
    Accumulated in place: dKj, dVj [Bc, D]; dQi [Br, D].
    Outputs (workspaces, [Br, Bc], must not overlap): S the scaled, masked scores;
             P = exp(S - LSE); dP = dO V^T; dS = P * (dP - D).
    """
    Br = Qi.shape[0]
    Bc = Kj.shape[0]
    gemm(scale, Qi, Kj, 0.0, S, True)  # S = scale * Qi Kj^T, [Br, Bc]
    for r in range(Br):
        if masked:  # -inf outside the row's visible spans (the forward's masking)
            s_hi, lo, hi = mask_spans(qpos[r], Lk, mk)
            c_lo = min(max(lo - k0, 0), Bc)
            c_hi = max(min(hi - k0, Bc), c_lo)
            c_sink = min(max(s_hi - k0, 0), c_lo)
            mask_max(S[r], c_lo, c_hi, NEG_INF, c_sink)
        if lse[r] == NEG_INF:  # the row sees no key at all: P = 0
            P[r, :] = 0.0
        else:
            exp_shifted(S[r], lse[r], P[r])  # P = exp(S - LSE), the forward's P~ / l
    gemm(1.0, dOi, Vj, 0.0, dP, True)  # dP = dO_i V_j^T, [Br, Bc]
    for r in range(Br):
        d = Di[r]
        for c in range(Bc):
            dS[r, c] = P[r, c] * (dP[r, c] - d)  # dS = P * (dP - D)
    gemm(1.0, P, dOi, 1.0, dVj, False, True)  # dV_j += P^T dO_i, [Bc, D]
    gemm(scale, dS, Qi, 1.0, dKj, False, True)  # dK_j += scale dS^T Q_i, [Bc, D]
    gemm(scale, dS, Kj, 1.0, dQi, False)  # dQ_i += scale dS K_j, [Br, D]


@njit(cache=True, fastmath=FASTMATH)
def row_dot(dO, O, Dv):
    """D = rowsum(dO * O) for dO, O [L, D] -> Dv [L] (accumulated in float64: it is one
    number per row, and dS = P (dP - D) subtracts it from dP)."""
    for r in range(dO.shape[0]):
        s = 0.0
        for d in range(dO.shape[1]):
            s += np.float64(dO[r, d]) * np.float64(O[r, d])
        Dv[r] = s


@njit(cache=True)
def tile_classes(Lq, Lk, Br, Bc, q_offset, mk):
    """[Tr, Tc] int8 of SKIPPED / FULL / PARTIAL: the mask is the same for every batch and
    head, so the classes are computed once (Tr * Tc bytes)."""
    Tr, Tc = cdiv(Lq, Br), cdiv(Lk, Bc)
    cls = np.empty((Tr, Tc), np.int8)
    qpos = np.arange(Lq) + q_offset
    for i in range(Tr):
        for j in range(Tc):
            cls[i, j] = mask_tile_class(qpos[i * Br: min((i + 1) * Br, Lq)], j * Bc,
                                        min((j + 1) * Bc, Lk), Lk, mk)
    return cls


@njit(parallel=True, cache=True)
def backward_kernel(Q, K, V, O, LSE, dO, dQ, dQ_part, dK, dV, scale, q_offset, mk, Br, Bc):
    """Q, O, dO [B, Hq, Lq, D], K/V [B, Hkv, Lk, D], LSE [B, Hq, Lq] float32 -> dQ (zeroed by
    the caller), dK, dV. dQ_part [W - 1, B, Hq, Lq, D] zeros: the other workers' dQ."""
    B, Hq, Lq, D = Q.shape
    Hkv, Lk = K.shape[1], K.shape[2]
    g = Hq // Hkv
    Tr, Tc = cdiv(Lq, Br), cdiv(Lk, Bc)
    cls = tile_classes(Lq, Lk, Br, Bc, q_offset, mk)
    qpos = np.arange(Lq) + q_offset  # absolute positions of the rows
    Dv = np.empty((B, Hq, Lq), np.float32)  # D = rowsum(dO * O), once per row
    for bh in prange(B * Hq):
        b, h = divmod(np.int64(bh), Hq)
        row_dot(dO[b, h], O[b, h], Dv[b, h])
    W = dQ_part.shape[0] + 1
    n_tasks = B * Hkv * Tc
    for w in prange(W):
        dQw = dQ if w == 0 else dQ_part[w - 1]
        S = np.empty((Br, Bc), np.float32)
        P = np.empty((Br, Bc), np.float32)
        dP = np.empty((Br, Bc), np.float32)
        dS = np.empty((Br, Bc), np.float32)
        for task in range(w, n_tasks, W):  # round-robin: costly and cheap KV blocks mix
            bh, j = divmod(np.int64(task), Tc)
            b, hk = divmod(bh, Hkv)
            k0 = j * Bc
            k1 = min(k0 + Bc, Lk)
            c = k1 - k0
            dKj = dK[b, hk, k0:k1]  # [c, D], owned by this task
            dVj = dV[b, hk, k0:k1]
            dKj[:] = 0.0
            dVj[:] = 0.0
            for h in range(hk * g, (hk + 1) * g):  # GQA: the group's query heads
                for i in range(Tr):
                    if cls[i, j] == SKIPPED:
                        continue  # no visible key: never computed
                    i0 = i * Br
                    i1 = min(i0 + Br, Lq)
                    n = i1 - i0
                    backward_tile(Q[b, h, i0:i1], K[b, hk, k0:k1], V[b, hk, k0:k1],
                                  dO[b, h, i0:i1], LSE[b, h, i0:i1], Dv[b, h, i0:i1],
                                  qpos[i0:i1], k0, Lk, mk, cls[i, j] == PARTIAL, scale,
                                  dKj, dVj, dQw[b, h, i0:i1], S[:n, :c], P[:n, :c],
                                  dP[:n, :c], dS[:n, :c])
    for bh in prange(B * Hq):  # dQ = the workers' partials, summed
        b, h = divmod(np.int64(bh), Hq)
        for w in range(W - 1):
            dQ[b, h] += dQ_part[w, b, h]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def standard_backward_kernel(Q, K, V, O, LSE, dO, P, dS, dQ, dK, dV, scale, q_offset, mk):
    """The baseline: materialize P and dS [B, Hq, Lq, Lk] (every entry, masked ones too, as
    a framework's math path does), then dQ = scale dS K row block by row block, and
    dV = sum_h P^T dO, dK = scale sum_h dS^T Q key block by key block (GQA: over the group).
    """
    B, Hq, Lq, D = Q.shape
    Hkv, Lk = K.shape[1], K.shape[2]
    g = Hq // Hkv
    Tr = cdiv(Lq, ROWS)
    for task in prange(B * Hq * Tr):
        bh, i = divmod(np.int64(task), Tr)
        b, h = divmod(bh, Hq)
        hk = h // g
        i0 = i * ROWS
        i1 = min(i0 + ROWS, Lq)
        Pr, dSr = P[b, h, i0:i1], dS[b, h, i0:i1]  # [n, Lk] rows of the full matrices
        gemm(scale, Q[b, h, i0:i1], K[b, hk], 0.0, dSr, True)  # S, staged in dS's rows
        gemm(1.0, dO[b, h, i0:i1], V[b, hk], 0.0, Pr, True)  # dP, staged in P's rows
        row = np.empty(Lk, np.float32)
        for r in range(i1 - i0):
            s_hi, lo, hi = mask_spans(i0 + r + q_offset, Lk, mk)
            mask_max(dSr[r], lo, hi, NEG_INF, s_hi)
            lse = LSE[b, h, i0 + r]
            if lse == NEG_INF:
                row[:] = 0.0
            else:
                exp_shifted(dSr[r], lse, row)  # P = exp(S - LSE)
            d = 0.0
            for x in range(D):
                d += np.float64(dO[b, h, i0 + r, x]) * np.float64(O[b, h, i0 + r, x])
            d32 = np.float32(d)
            for c in range(Lk):
                dSr[r, c] = row[c] * (Pr[r, c] - d32)  # dS = P * (dP - D)
                Pr[r, c] = row[c]
        gemm(scale, dSr, K[b, hk], 0.0, dQ[b, h, i0:i1], False)  # dQ = scale dS K
    Tk = cdiv(Lk, ROWS)
    for task in prange(B * Hkv * Tk):
        bh, j = divmod(np.int64(task), Tk)
        b, hk = divmod(bh, Hkv)
        k0 = j * ROWS
        k1 = min(k0 + ROWS, Lk)
        for h in range(hk * g, (hk + 1) * g):
            beta = 0.0 if h == hk * g else 1.0
            gemm(1.0, P[b, h][:, k0:k1], dO[b, h], beta, dV[b, hk, k0:k1], False, True)
            gemm(scale, dS[b, h][:, k0:k1], Q[b, h], beta, dK[b, hk, k0:k1], False, True)



# Default (q_block, kv_block) of the backward pass: the best or within 7% of the best of six
# sizes from 32 to 128, measured at L=4096, D=64/128 (BENCHMARKS.md, "Backward pass").
BACKWARD_BLOCKS = (64, 64)


def _num_threads() -> int:
    import numba

    return numba.get_num_threads()


def _check_backward(q, k, v, out, lse, dout, check):
    """float32 C-contiguous q, k, v, out, lse, dout; errors name the argument."""
    q, k, v = check_qkv(q, k, v, ndim=4, finite=check)
    B, Hq, Lq, D = q.shape
    checked = []
    for name, x in (("out", out), ("dout", dout)):
        x = as_float32(name, x)
        if x.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q [B, Hq, Lq, D] = {q.shape} "
                             f"(the forward's output and its gradient), got {x.shape}")
        if check:
            check_finite(name, x)
        checked.append(x)
    lse = as_float32("lse", lse)
    if lse.shape != (B, Hq, Lq):
        raise ValueError(f"lse must have shape [B, Hq, Lq] = {(B, Hq, Lq)} (the forward's "
                         f"row log-sum-exp, return_lse=True), got {lse.shape}")
    if check and (np.isnan(lse).any() or (lse == np.inf).any()):
        raise ValueError("lse contains NaN or +inf; allowed are finite values and -inf (a row "
                         "that sees no key)")
    return q, k, v, checked[0], lse, checked[1]


def _empty_grads(q, k):
    return (np.zeros(q.shape, np.float32), np.zeros(k.shape, np.float32),
            np.zeros(k.shape, np.float32))


def streaming_attention_backward(q, k, v, out, lse, dout, *, causal=True, q_offset=None,
                                 window=None, sinks=None, prefix=None, doc_ids=None,
                                 sink_logits=None, scale=None, q_block=None, kv_block=None,
                                 check_finite=True):
    """Gradients (dq, dk, dv) of exact attention, FlashAttention-2's way (module docstring).

    q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] and the mask keywords as given to the forward
    ``streaming_attention``; out [B, Hq, Lq, D] and lse [B, Hq, Lq] what it returned
    (``return_lse=True``); dout [B, Hq, Lq, D] the gradient of the loss w.r.t. out.
    Returns float32 dq [B, Hq, Lq, D], dk and dv [B, Hkv, Lk, D] (GQA: summed over the
    group). ``sink_logits`` is accepted for symmetry: it is inside ``lse`` already.
    q_block, kv_block: tile sizes Br, Bc (default ``BACKWARD_BLOCKS``).
    Memory beyond the outputs: (threads - 1) dQ partials and four [Br, Bc] tiles per thread.
    """
    q, k, v, out, lse, dout = _check_backward(q, k, v, out, lse, dout, check_finite)
    B, Hq, Lq, D = q.shape
    Lk = k.shape[2]
    mask = mask_spec(Lq, Lk, causal, q_offset, window, sinks=sinks, prefix=prefix,
                     doc_ids=doc_ids, sink_logits=sink_logits, Hq=Hq)
    scale = np.float32(check_scale(scale, D))
    Br = check_block("q_block", q_block, BACKWARD_BLOCKS[0])
    Bc = check_block("kv_block", kv_block, BACKWARD_BLOCKS[1])
    dq, dk, dv = _empty_grads(q, k)
    if Lq == 0:
        return dq, dk, dv
    W = max(1, min(_num_threads(), B * k.shape[1] * cdiv(Lk, Bc)))
    dq_part = np.zeros((W - 1,) + q.shape, np.float32)
    backward_kernel(q, k, v, out, lse, dout, dq, dq_part, dk, dv, scale, mask.q_offset,
                    mask.geometry(), Br, Bc)
    return dq, dk, dv


def standard_attention_backward(q, k, v, out, lse, dout, *, causal=True, q_offset=None,
                                window=None, sinks=None, prefix=None, doc_ids=None,
                                sink_logits=None, scale=None, check_finite=True,
                                max_bytes=None):
    """The same gradients the standard way: P and dS [B, Hq, Lq, Lk] materialized (memory
    grows with Lq * Lk). Arguments as ``streaming_attention_backward``.

    max_bytes : refuse (MemoryError naming the sizes) when P and dS would exceed this many
        bytes; default half of physical memory.
    """
    q, k, v, out, lse, dout = _check_backward(q, k, v, out, lse, dout, check_finite)
    B, Hq, Lq, D = q.shape
    Lk = k.shape[2]
    mask = mask_spec(Lq, Lk, causal, q_offset, window, sinks=sinks, prefix=prefix,
                     doc_ids=doc_ids, sink_logits=sink_logits, Hq=Hq)
    scale = np.float32(check_scale(scale, D))
    dq, dk, dv = _empty_grads(q, k)
    if Lq == 0:
        return dq, dk, dv
    limit = int(DEFAULT_MEMORY_FRACTION * _physical_memory()) if max_bytes is None else max_bytes
    need = 2 * B * Hq * Lq * Lk * 4
    if need > limit:
        raise MemoryError(
            f"the standard backward would materialize P and dS, two [{B}, {Hq}, {Lq}, {Lk}] "
            f"float32 matrices of {need / 2**30:.2f} GiB together, above the limit of "
            f"{limit / 2**30:.2f} GiB (max_bytes); use streaming_attention_backward"
        )
    P = np.empty((B, Hq, Lq, Lk), np.float32)
    dS = np.empty((B, Hq, Lq, Lk), np.float32)
    standard_backward_kernel(q, k, v, out, lse, dout, P, dS, dq, dk, dv, scale,
                             mask.q_offset, mask.geometry())
    return dq, dk, dv
