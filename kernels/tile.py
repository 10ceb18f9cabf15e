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

Masks are described by the absolute position of each query row (``qpos``) and a ``Mask``
(causal, window, sinks, prefix, doc_start). Every such mask gives each row at most two spans
of visible keys, the sink span ``[0, s_hi)`` and the main span ``[lo, hi)``
(``mask_spans``), which is what lets whole tiles be skipped.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from ._config import FASTMATH
from .blas import float_from_bits
from .smallmm import gemm_nn, gemm_nt

# Tile classes (shared with attnviz.masks, which names them).
SKIPPED = 0  # no visible key in the tile: not computed at all
FULL = 1  # every key visible from every row: no mask needed
PARTIAL = 2  # some entries masked: the causal diagonal or a window edge

NO_WINDOW = 0
NEG_INF = -np.inf

Mask = namedtuple("Mask", "causal window sinks prefix doc_start")
Mask.__doc__ = """The mask as the jitted code takes it (``validate.MaskSpec.geometry`` builds it).

causal (bool): keys <= p, or with ``prefix`` P > 0 keys <= max(p, P - 1) (prefix-LM);
window (int, 0 = none): also keys >= p - W + 1, except the first ``sinks`` (int) keys;
doc_start (int64 [Lk], empty when unused): the first key of the document of each position;
    a query at p sees keys >= doc_start[p], and nothing when p is outside [0, Lk).
"""

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
def mask_spans(pos, Lk, mk):
    """Keys visible from a query at absolute position ``pos`` under the Mask ``mk``: the sink
    span [0, s_hi) and the main span [lo, hi), with 0 <= s_hi < lo <= hi <= Lk or s_hi = 0.

    causal: keys ``<= pos`` (``<= max(pos, P - 1)`` with a prefix P); window W: keys
    ``>= pos - W + 1``, but the first ``sinks`` keys stay visible (causally); documents:
    keys ``>= doc_start[pos]``; neither causal nor documents: all ``Lk`` keys. A row before
    position 0 sees nothing, and so does a row past the last key under documents.
    """
    s_hi = 0
    lo = 0
    hi = Lk
    if mk.causal:
        last = max(pos, mk.prefix - 1) if pos >= 0 else pos  # last visible key
        hi = min(Lk, last + 1)
        if mk.window > 0:
            lo = max(0, pos - mk.window + 1)
            s_hi = max(min(mk.sinks, hi), 0)
        if mk.doc_start.shape[0] > 0:
            if 0 <= pos < Lk:
                lo = max(lo, mk.doc_start[pos])
            else:
                hi = 0
    hi = max(hi, 0)  # a row before position 0 sees nothing
    lo = min(lo, hi)  # a window that starts past the last key sees nothing
    if s_hi >= lo:  # the sinks reach the window: one span
        lo = 0
        s_hi = 0
    return s_hi, lo, hi


@njit(cache=True)
def row_span(pos, Lk, causal, window):
    """[lo, hi) of the plain masks (causal, window): ``mask_spans`` without sinks, prefix or
    documents, whose rows see one span."""
    _, lo, hi = mask_spans(pos, Lk, Mask(causal, window, 0, 0, np.empty(0, np.int64)))
    return lo, hi


@njit(cache=True, inline="always")
def _overlap(a0, a1, b0, b1):
    """Length of [a0, a1) intersected with [b0, b1)."""
    return max(0, min(a1, b1) - max(a0, b0))


@njit(cache=True)
def mask_tile_class(qpos, k0, k1, Lk, mk):
    """SKIPPED, FULL or PARTIAL for the rows at positions ``qpos`` [Br] and keys [k0, k1)."""
    n_full = 0
    n_empty = 0
    for r in range(qpos.shape[0]):
        s_hi, lo, hi = mask_spans(qpos[r], Lk, mk)
        seen = _overlap(0, s_hi, k0, k1) + _overlap(lo, hi, k0, k1)  # the spans are disjoint
        if seen == k1 - k0:
            n_full += 1
        elif seen == 0:
            n_empty += 1
    if n_full == qpos.shape[0]:
        return FULL
    if n_empty == qpos.shape[0]:
        return SKIPPED
    return PARTIAL


@njit(cache=True)
def tile_class(qpos, k0, k1, Lk, causal, window):
    """``mask_tile_class`` of the plain masks (causal, window)."""
    return mask_tile_class(qpos, k0, k1, Lk, Mask(causal, window, 0, 0, np.empty(0, np.int64)))


@njit(cache=True)
def visible_tiles(qpos, Lk, Bc, mk):
    """The KV tiles (of Bc keys) that rows at positions ``qpos`` may see, as two runs in visit
    order: the sink tiles [0, j_sink), then the main tiles [j_lo, j_hi), j_sink <= j_lo <= j_hi.
    Tiles outside them hold no visible key and are never visited."""
    s_max = 0
    lo_min = Lk
    hi_max = 0
    for r in range(qpos.shape[0]):
        s_hi, lo, hi = mask_spans(qpos[r], Lk, mk)
        s_max = max(s_max, s_hi)
        if hi > lo:
            lo_min = min(lo_min, lo)
            hi_max = max(hi_max, hi)
    j_sink = cdiv(s_max, Bc)
    j_lo = max(lo_min // Bc, j_sink)
    return j_sink, j_lo, max(cdiv(hi_max, Bc), j_lo)


@njit(cache=True, inline="always")
def _order_key(b):
    """An int32 whose signed order is the float order of the float32 with bits ``b``: the
    magnitude bits of negative floats are flipped (the map is its own inverse)."""
    return np.int32(b ^ np.int32(np.int32(b >> np.int32(31)) & np.int32(0x7FFFFFFF)))


_NEG_INF_KEY = np.int32(-2139095041)  # _order_key of -inf's bits (0xff800000)


@njit(cache=True, fastmath=FASTMATH, inline="always")
def mask_max(row, c_lo, c_hi, m_old, c_sink=0):
    """-inf outside the visible columns [0, c_sink) and [c_lo, c_hi) of a score row (c_sink <=
    c_lo: the sink keys and the main span); returns max(m_old, max(row)).

    The max is taken on order-preserving int32 keys of the floats' bits: a float max keeps
    NaN semantics that stop LLVM from vectorizing the reduction (0.8 ns per score here), an
    integer max vectorizes (0.07 ns per score on long rows). An empty span gives -inf. A NaN
    m_old stays NaN; a NaN score may give NaN (see below).
    """
    for c in range(c_sink, c_lo):
        row[c] = NEG_INF
    for c in range(c_hi, row.shape[0]):
        row[c] = NEG_INF
    bits = row.view(np.int32)
    best = _NEG_INF_KEY
    for c in range(c_sink):
        key = _order_key(bits[c])
        best = key if key > best else best
    for c in range(c_lo, c_hi):
        key = _order_key(bits[c])
        best = key if key > best else best
    m_tile = float_from_bits(_order_key(best))
    # a NaN score with the sign bit clear has the largest key: the max is NaN, and it must
    # stay NaN (m_tile != m_tile), so the row's m, l, acc and its output come out NaN; one
    # with the sign bit set has the smallest key, and exp_shifted turns it into a NaN P~
    return m_tile if (m_tile > m_old or m_tile != m_tile) else m_old


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
        t = max(t, np.float32(-127.0))  # also maps -inf; NaN first: a NaN stays NaN
        b = np.int32(t + np.float32(127.5))  # round(t) + 127 >= 0: the biased exponent of 2^k
        k = np.float32(np.int32(b - np.int32(127)))  # in integers: reassoc must not fold
        f = t - k  # [-1/2, 1/2]                       # it into (t + 127) - b, losing t's bits
        two_f = c0 + f * (c1 + f * (c2 + f * (c3 + f * (c4 + f * (c5 + f * c6)))))
        v = two_f * float_from_bits(b << 23)  # 2^f * 2^k, exact (2^k = 0.0 when b == 0)
        out[c] = v
        total += v
    return total


PARTIAL_ROWS = 64  # a PARTIAL tile's products run per group of this many rows (see below)


@njit(cache=True, inline="always")
def _row_cols(pos, k0, Bc, Lk, mk):
    """The visible columns of the row at ``pos`` in the tile of keys [k0, k0 + Bc): the sink
    columns [0, c_sink) and the main ones [c_lo, c_hi), c_sink <= c_lo <= c_hi."""
    s_hi, lo, hi = mask_spans(pos, Lk, mk)
    c_lo = min(max(lo - k0, 0), Bc)
    c_hi = max(min(hi - k0, Bc), c_lo)
    return min(max(s_hi - k0, 0), c_lo), c_lo, c_hi


@njit(cache=True, inline="always")
def _group_cols(qpos, r0, r1, k0, Bc, Lk, mk):
    """[c0, c1): the columns that any of the rows r0 <= r < r1 sees (c0 >= c1: none)."""
    c0, c1 = Bc, 0
    for r in range(r0, r1):
        c_sink, c_lo, c_hi = _row_cols(qpos[r], k0, Bc, Lk, mk)
        if c_sink > 0:
            c0, c1 = 0, max(c1, c_sink)
        if c_hi > c_lo:
            c0, c1 = min(c0, c_lo), max(c1, c_hi)
    return c0, c1


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _rows_update(Qi, Kj, Vj, qpos, k0, Lk, mk, masked, scale, m, l, acc, S, P, alpha,
                 loops, r0, r1, c0, c1):
    """``tile_update`` for the rows r0 <= r < r1, whose products need only the columns
    [c0, c1) (c0 >= c1: none): S, the mask and max, P~ and l, the rescale, acc += P~ V_j."""
    if c1 > c0:  # S = scale * Qi Kj^T (scale rides in the GEMM)
        gemm_nt(scale, Qi[r0:r1], Kj[c0:c1], S[r0:r1, c0:c1], loops[0])
    rescale = False
    for r in range(r0, r1):
        # -- mask (the columns left out above, too), and the new running max
        c_sink, c_lo, c_hi = 0, 0, S.shape[1]  # visible columns of this row in the tile
        if masked:
            c_sink, c_lo, c_hi = _row_cols(qpos[r], k0, S.shape[1], Lk, mk)
        m_old = m[r]
        m_new = mask_max(S[r], c_lo, c_hi, m_old, c_sink)
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
        for r in range(r0, r1):
            a = alpha[r]
            if a != np.float32(1.0):
                for d in range(acc.shape[1]):
                    acc[r, d] *= a
    if c1 > c0:
        gemm_nn(P[r0:r1, c0:c1], Vj[c0:c1], 1.0, acc[r0:r1], loops[1])


@njit(cache=True, fastmath=FASTMATH)
def tile_update(Qi, Kj, Vj, qpos, k0, Lk, mk, masked, scale, m, l, acc, S, P, alpha,
                loops=(False, False)):
    """One online-softmax step of the rows ``Qi`` against the KV tile starting at key ``k0``.

    Inputs:  Qi [Br, D], Kj [Bc, D], Vj [Bc, D] float32; qpos [Br] absolute row positions;
             mk the Mask.
    State (updated in place): m [Br], l [Br], acc [Br, D].
    Outputs: S [Br, Bc] the scaled, masked scores; P [Br, Bc] P~ = exp(S - m');
             alpha [Br] the rescale factor applied to the old (l, acc).
    ``masked=False`` promises a FULL tile. S and P must not overlap: aliasing them would push
    LLVM onto the scalar fallback of the exp loop, a different (slower) summation order than
    the traced driver's. ``loops``: (for S = Qi Kj^T, for P~ V_j), each product as plain
    loops (True) or BLAS (False); for the few rows of a decode tile loops win on some hosts
    and for some products (``kernels/smallmm.py``).

    A FULL tile is one step of all its rows. A PARTIAL tile (the causal diagonal, a window's
    edge) takes its rows in groups of ``PARTIAL_ROWS``, each a whole step whose products
    cover only the columns some row of the group sees: on a 256 x 256 causal diagonal tile
    that is 62.5% of the products. Every score a row sees is the same dot product either
    way, and each row's step depends on its own row only; the rest are -inf (S) and 0 (P~),
    as the mask makes them. Keys outside the group's column range [c0, c1) never enter its
    P~ V; keys inside it that a row does not see enter with P~ = 0 (0 * NaN = NaN, as in any
    GEMM).
    """
    Br = Qi.shape[0]
    Bc = Kj.shape[0]
    if not masked:
        _rows_update(Qi, Kj, Vj, qpos, k0, Lk, mk, False, scale, m, l, acc, S, P, alpha,
                     loops, 0, Br, 0, Bc)
        return
    for r0 in range(0, Br, PARTIAL_ROWS):
        r1 = min(r0 + PARTIAL_ROWS, Br)
        c0, c1 = _group_cols(qpos, r0, r1, k0, Bc, Lk, mk)
        _rows_update(Qi, Kj, Vj, qpos, k0, Lk, mk, True, scale, m, l, acc, S, P, alpha,
                     loops, r0, r1, c0, c1)


@njit(cache=True)
def init_state(m, l, acc, sink=NEG_INF):
    """The state of a row that has seen no key yet: m = -inf, l = 0, acc = 0; or, with a sink
    logit s (a number, or one per row), m = s, l = 1, acc = 0: an extra logit in the
    denominator that adds nothing to the output (gpt-oss). s = -inf means no sink."""
    m[:] = sink
    for r in range(m.shape[0]):
        l[r] = 0.0 if m[r] == NEG_INF else 1.0
    acc[:] = 0.0


@njit(cache=True, fastmath=FASTMATH)
def finalize(m, l, acc, O, lse):
    """O = acc / l and LSE = m + log(l); a row that saw no key (l = 0) gets O = 0, LSE = -inf
    (or LSE = s with a sink logit s: l = 1, acc = 0). A row that saw a NaN has l = NaN and
    gets NaN, never the zeros of a row with no key."""
    for r in range(m.shape[0]):
        if l[r] == 0.0:
            O[r, :] = 0.0
            lse[r] = NEG_INF
        else:
            inv = np.float32(1.0) / l[r]
            for d in range(acc.shape[1]):
                O[r, d] = acc[r, d] * inv
            lse[r] = m[r] + math.log(l[r])


@njit(cache=True, fastmath=FASTMATH)
def merge_state(m, l, acc, m_b, l_b, acc_b):
    """Merge the partial state b into (m, l, acc) in place: exact, associative, commutative.

    m = max(ma, mb); l = la e^(ma-m) + lb e^(mb-m); acc = acc_a e^(ma-m) + acc_b e^(mb-m).
    The side holding the max gets weight 1 exactly; two states that saw no key (m = -inf)
    add up (0 + 0: the identity), so a NaN in l or acc is never dropped.
    """
    for r in range(m.shape[0]):
        m_new = max(m[r], m_b[r])
        a = np.float32(1.0) if m[r] == m_new else math.exp(m[r] - m_new)
        b = np.float32(1.0) if m_b[r] == m_new else math.exp(m_b[r] - m_new)
        l[r] = a * l[r] + b * l_b[r]
        for d in range(acc.shape[1]):
            acc[r, d] = a * acc[r, d] + b * acc_b[r, d]
        m[r] = m_new


@njit(cache=True)
def attend_span(Qi, K, V, qpos, j_lo, j_hi, Bc, Lk, mk, scale, m, l, acc, S, alpha,
                loops=(False, False)):
    """Walk KV tiles j_lo <= j < j_hi of ``K, V`` [Lk, D] in order (tile j = keys
    [j*Bc, min((j+1)*Bc, Lk)), the same grid everywhere, so every driver does the same sums).

    Tiles with no visible key are skipped; only PARTIAL tiles pay for the mask. ``S`` is a
    flat workspace of at least 2*Br*Bc floats: S and P~ (ragged tiles take contiguous
    prefixes of each half). ``loops``: see ``tile_update``.
    """
    Br = Qi.shape[0]
    half = S.shape[0] // 2
    for j in range(j_lo, j_hi):
        k0 = j * Bc
        k1 = min(k0 + Bc, Lk)
        cls = mask_tile_class(qpos, k0, k1, Lk, mk)
        if cls == SKIPPED:
            continue
        St = S[: Br * (k1 - k0)].reshape((Br, k1 - k0))
        Pt = S[half: half + Br * (k1 - k0)].reshape((Br, k1 - k0))
        tile_update(Qi, K[k0:k1], V[k0:k1], qpos, k0, Lk, mk, cls == PARTIAL, scale,
                    m, l, acc, St, Pt, alpha, loops)
