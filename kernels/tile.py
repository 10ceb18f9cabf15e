"""THE online-softmax tile update, and the mask geometry it needs.

Every number attnviz shows or times goes through ``tile_update``: the parallel prefill and
decode kernels (``kernels/streaming.py``) and the traced step-through (``attnviz/trace.py``)
all call it. Per query row the state is ``(m, l, acc)``; for a KV tile j with scores
``S = scale * Q_i K_j^T`` (masked entries ``-inf``):

    m'   = max(m, rowmax(S))
    alpha = exp(m - m')                 # 1 when the max did not move
    P~   = exp(S - m')
    l'   = alpha * l + rowsum(P~)
    acc' = alpha * acc + P~ V_j
    end:  O = acc / l,  LSE = m + log(l)

Masks are described by the absolute position of each query row (``qpos``) and two numbers:
``causal`` and ``window`` (0 = no window). Every such mask gives each row one contiguous span
of visible keys ``[lo, hi)`` (``row_span``), which is what lets whole tiles be skipped.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._config import FASTMATH
from .blas import float_from_bits, gemm

# Tile classes (shared with attnviz.masks, which names them).
SKIPPED = 0  # no visible key in the tile: not computed at all
FULL = 1  # every key visible from every row: no mask needed
PARTIAL = 2  # some entries masked: the causal diagonal or a window edge

NO_WINDOW = 0
NEG_INF = -np.inf

# exp(x) = 2^(x log2 e) = 2^n * 2^f with n = round(x log2 e), f in [-1/2, 1/2]. 2^f is a
# degree-6 polynomial (relative-error fit, max rel. error 1.0e-7 in float32); 2^n is added to
# the float's exponent bits. Unlike libm's exp (Numba has no SVML here) the loop vectorizes.
LOG2E = np.float32(1.4426950408889634)
EXP2_POLY = (np.float32(1.0), np.float32(0.6931471824645996), np.float32(0.24022646248340607),
             np.float32(0.05550328642129898), np.float32(0.009618489071726799),
             np.float32(0.0013399930903688073), np.float32(0.00015345794963650405))


@njit(cache=True, inline="always")
def cdiv(a, b):
    """Ceiling division for non-negative ints: the number of blocks of size b covering a."""
    return (a + b - 1) // b


@njit(cache=True)
def row_span(pos, Lk, causal, window):
    """Keys visible from a query at absolute position ``pos``: the half-open span [lo, hi).

    causal: keys ``<= pos``; window W (with causal): keys ``>= pos - W + 1``; neither: all
    ``Lk`` keys. An empty span (``lo == hi``) is a row that sees no key.
    """
    lo = 0
    hi = Lk
    if causal:
        hi = min(Lk, pos + 1)
        if window > 0:
            lo = max(0, pos - window + 1)
    hi = max(hi, 0)  # a row before position 0 sees nothing
    lo = min(lo, hi)  # a window that starts past the last key sees nothing
    return lo, hi  # 0 <= lo <= hi <= Lk


@njit(cache=True)
def tile_class(qpos, k0, k1, Lk, causal, window):
    """SKIPPED, FULL or PARTIAL for the rows at positions ``qpos`` [Br] and keys [k0, k1)."""
    n_full = 0
    n_empty = 0
    for r in range(qpos.shape[0]):
        lo, hi = row_span(qpos[r], Lk, causal, window)
        if lo <= k0 and hi >= k1:
            n_full += 1
        elif hi <= k0 or lo >= k1 or hi <= lo:
            n_empty += 1
    if n_full == qpos.shape[0]:
        return FULL
    if n_empty == qpos.shape[0]:
        return SKIPPED
    return PARTIAL


@njit(cache=True, inline="always")
def _order_key(b):
    """An int32 whose signed order is the float order of the float32 with bits ``b``: the
    magnitude bits of negative floats are flipped (the map is its own inverse)."""
    return np.int32(b ^ np.int32(np.int32(b >> np.int32(31)) & np.int32(0x7FFFFFFF)))


_NEG_INF_KEY = np.int32(-2139095041)  # _order_key of -inf's bits (0xff800000)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def mask_max(row, c_lo, c_hi, m_old):
    """-inf outside the visible columns [c_lo, c_hi) of a score row; returns
    max(m_old, max(row)).

    The max is taken on order-preserving int32 keys of the floats' bits: a float max keeps
    NaN semantics that stop LLVM from vectorizing the reduction (0.8 ns per score here), an
    integer max vectorizes (0.07 ns per score on long rows). An empty span gives -inf.
    """
    for c in range(c_lo):
        row[c] = NEG_INF
    for c in range(c_hi, row.shape[0]):
        row[c] = NEG_INF
    bits = row.view(np.int32)
    best = _NEG_INF_KEY
    for c in range(c_lo, c_hi):
        key = _order_key(bits[c])
        best = key if key > best else best
    m_tile = float_from_bits(_order_key(best))
    return m_tile if m_tile > m_old else m_old


@njit(cache=True, fastmath=FASTMATH, inline="always")
def exp_shifted(x, shift, out):
    """out[c] = exp(x[c] - shift) for a row x [n] with x - shift <= 0; returns sum(out).

    exp(-inf) = 0 exactly; results below ~2^-126 flush to 0. Everything stays 32-bit and
    2^k is built from its exponent bits, so the loop compiles to AVX2 vector code.
    """
    c0, c1, c2, c3, c4, c5, c6 = EXP2_POLY
    total = np.float32(0.0)
    for c in range(x.shape[0]):
        t = (x[c] - shift) * LOG2E  # exp(x) = 2^t
        t = max(t, np.float32(-127.0))  # also maps -inf
        b = np.int32(t + np.float32(127.5))  # round(t) + 127 >= 0: the biased exponent of 2^k
        k = np.float32(np.int32(b - np.int32(127)))  # in integers: reassoc must not fold
        f = t - k  # [-1/2, 1/2]                       # it into (t + 127) - b, losing t's bits
        two_f = c0 + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * c6)))))
        v = two_f * float_from_bits(b << 23)  # 2^f * 2^k, exact (2^k = 0.0 when b == 0)
        out[c] = v
        total += v
    return total


@njit(cache=True, fastmath=FASTMATH)
def tile_update(Qi, Kj, Vj, qpos, k0, Lk, causal, window, masked, scale,
                m, l, acc, S, P, alpha):
    """One online-softmax step of the rows ``Qi`` against the KV tile starting at key ``k0``.

    Inputs:  Qi [Br, D], Kj [Bc, D], Vj [Bc, D] float32; qpos [Br] absolute row positions.
    State (updated in place): m [Br], l [Br], acc [Br, D].
    Outputs: S [Br, Bc] the scaled, masked scores; P [Br, Bc] P~ = exp(S - m');
             alpha [Br] the rescale factor applied to the old (l, acc).
    ``masked=False`` promises a FULL tile. S and P must not overlap: aliasing them would push
    LLVM onto the scalar fallback of the exp loop, a different (slower) summation order than
    the traced driver's.
    """
    Br = Qi.shape[0]
    Bc = Kj.shape[0]
    gemm(scale, Qi, Kj, 0.0, S, True)  # S = scale * Qi Kj^T, [Br, Bc] (scale rides in GEMM)
    rescale = False
    for r in range(Br):
        # -- mask, and the new running max
        c_lo, c_hi = 0, Bc  # visible columns of this row in the tile
        if masked:
            lo, hi = row_span(qpos[r], Lk, causal, window)
            c_lo = min(max(lo - k0, 0), Bc)
            c_hi = max(min(hi - k0, Bc), c_lo)
        m_old = m[r]
        m_new = mask_max(S[r], c_lo, c_hi, m_old)
        # -- rescale factor; a row that has seen no key yet keeps m = -inf and P~ = 0
        a = np.float32(1.0) if m_new == m_old else math.exp(m_old - m_new)
        m_ref = m_new if m_new != NEG_INF else np.float32(0.0)
        # -- P~ and its row sum
        rowsum = exp_shifted(S[r], m_ref, P[r])
        m[r] = m_new
        l[r] = a * l[r] + rowsum
        alpha[r] = a
        rescale |= a != np.float32(1.0)
    # -- acc' = alpha * acc + P~ V_j: rescale the rows whose max moved (after the first tiles
    #    of a row that is rare), then let the GEMM add P~ V_j into acc (beta = 1)
    if rescale:
        for r in range(Br):
            a = alpha[r]
            if a != np.float32(1.0):
                for d in range(acc.shape[1]):
                    acc[r, d] *= a
    gemm(1.0, P, Vj, 1.0, acc, False)


@njit(cache=True)
def init_state(m, l, acc):
    """The empty state: m = -inf, l = 0, acc = 0 (a row that has seen nothing)."""
    m[:] = NEG_INF
    l[:] = 0.0
    acc[:] = 0.0


@njit(cache=True, fastmath=FASTMATH)
def finalize(m, l, acc, O, lse):
    """O = acc / l and LSE = m + log(l); a row that saw no key gets O = 0, LSE = -inf."""
    for r in range(m.shape[0]):
        if l[r] > 0.0:
            inv = np.float32(1.0) / l[r]
            for d in range(acc.shape[1]):
                O[r, d] = acc[r, d] * inv
            lse[r] = m[r] + math.log(l[r])
        else:
            O[r, :] = 0.0
            lse[r] = NEG_INF


@njit(cache=True, fastmath=FASTMATH)
def merge_state(m, l, acc, m_b, l_b, acc_b):
    """Merge the partial state b into (m, l, acc) in place: exact, associative, commutative.

    m = max(ma, mb); l = la e^(ma-m) + lb e^(mb-m); acc = acc_a e^(ma-m) + acc_b e^(mb-m).
    """
    for r in range(m.shape[0]):
        m_new = max(m[r], m_b[r])
        if m_new == NEG_INF:
            continue  # neither side has seen a key
        a = math.exp(m[r] - m_new)
        b = math.exp(m_b[r] - m_new)
        l[r] = a * l[r] + b * l_b[r]
        for d in range(acc.shape[1]):
            acc[r, d] = a * acc[r, d] + b * acc_b[r, d]
        m[r] = m_new


@njit(cache=True)
def attend_span(Qi, K, V, qpos, j_lo, j_hi, Bc, Lk, causal, window, scale,
                m, l, acc, S, alpha):
    """Walk KV tiles j_lo <= j < j_hi of ``K, V`` [Lk, D] in order (tile j = keys
    [j*Bc, min((j+1)*Bc, Lk)), the same grid everywhere, so every driver does the same sums).

    Tiles with no visible key are skipped; only PARTIAL tiles pay for the mask. ``S`` is a
    flat workspace of at least 2*Br*Bc floats: S and P~ (ragged tiles take contiguous
    prefixes of each half).
    """
    Br = Qi.shape[0]
    half = S.shape[0] // 2
    for j in range(j_lo, j_hi):
        k0 = j * Bc
        k1 = min(k0 + Bc, Lk)
        cls = tile_class(qpos, k0, k1, Lk, causal, window)
        if cls == SKIPPED:
            continue
        St = S[: Br * (k1 - k0)].reshape((Br, k1 - k0))
        Pt = S[half: half + Br * (k1 - k0)].reshape((Br, k1 - k0))
        tile_update(Qi, K[k0:k1], V[k0:k1], qpos, k0, Lk, causal, window, cls == PARTIAL,
                    scale, m, l, acc, St, Pt, alpha)
