"""The split-KV decode lab: the partial states of the key chunks, and their merge.

One decode step: the g query heads that share a KV head sit at one position p (default
``Lk - 1``) and attend to the cache ``k, v`` [Lk, D]. The decode kernel (Flash-Decoding)
cuts the keys into chunks, computes a partial state (m, l, acc) per chunk in parallel and
merges them (``kernels/streaming.py`` ``decode_kernel``). This module does the same steps with
the kernels' own jitted routines (``kernels.tile.attend_span``, ``merge_state``,
``finalize``), one chunk and one merge at a time, so a learner can look at every number:

    partials(q, k, v, bounds=[0, b1, ..., Lk])  -> one State per chunk [b_c, b_c+1)
    merge_pair(a, b)                            -> the merged State (any two, any order)
    merge(states, order)                        -> (O [g, D], LSE [g]): a left fold

Two states merge exactly (DESIGN.md section 2):
``m = max(ma, mb); l = la e^(ma-m) + lb e^(mb-m); acc = acc_a e^(ma-m) + acc_b e^(mb-m)``,
associative and commutative. A chunk with no visible key is the state (m = -inf, l = 0,
acc = 0): the identity of the merge. Chunk c's share of the output is its merge weight
``w_c = exp(LSE_c - LSE)``: O = sum_c w_c O_c with O_c = acc_c / l_c, and sum_c w_c = 1.

``kernel_bounds`` cuts the keys the way the decode kernel does (``kernels.decode_split``):
chunks of ``per`` KV tiles over the visible span, plus the invisible keys before it as one
empty chunk when a window leaves some.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernels import decode_block, decode_split
from kernels.tile import attend_span, cdiv, finalize, init_state, merge_state, row_span
from kernels.tuning import active as active_tuning
from kernels.validate import as_float32, check_finite, mask_spec


@dataclass(frozen=True)
class State:
    """A partial online-softmax state of the g query rows (one per query head).

    ``chunks``: the chunk indices it holds (one for a partial, more after merges);
    ``keys``: the half-open key spans it covers.
    """

    m: np.ndarray  # [g] float32 running max of the scores (-inf: no visible key)
    l: np.ndarray  # [g] float32 denominator, sum of exp(s - m)
    acc: np.ndarray  # [g, D] float32 unnormalized output, sum of exp(s - m) v
    chunks: tuple[int, ...]
    keys: tuple[tuple[int, int], ...]

    def finalized(self) -> tuple[np.ndarray, np.ndarray]:
        """(O [g, D], LSE [g]) of this state alone, by the kernels' ``finalize``: O = acc / l,
        LSE = m + log l; a row that saw no key gives O = 0 and LSE = -inf."""
        g, D = self.acc.shape
        O = np.empty((g, D), np.float32)
        lse = np.empty(g, np.float32)
        finalize(self.m, self.l, self.acc, O, lse)
        return O, lse

    @property
    def lse(self) -> np.ndarray:
        """[g] float32 log-sum-exp of the scores this state has seen (natural log)."""
        return self.finalized()[1]

    @property
    def empty(self) -> bool:
        """No row has seen a key: the identity of the merge."""
        return bool(np.all(self.l == 0))


def _check_bounds(bounds, Lk: int) -> np.ndarray:
    try:
        b = np.asarray(bounds)
    except Exception as e:  # noqa: BLE001 (a ragged list and the like)
        raise TypeError(f"bounds must be a list of integers, got {bounds!r}") from e
    if b.ndim != 1 or b.size < 2 or not (np.issubdtype(b.dtype, np.integer)):
        raise ValueError(
            f"bounds must be integers [0, b1, ..., Lk] (at least two), got {bounds!r}")
    if b[0] != 0 or b[-1] != Lk:
        raise ValueError(f"bounds must start at 0 and end at Lk={Lk}, got {b.tolist()}")
    if np.any(np.diff(b) < 0):
        raise ValueError(f"bounds must be non-decreasing, got {b.tolist()}")
    return b.astype(np.int64)


def _chunk_state(q, k, v, pos, a, b, mask, scale, Bc, loops):
    """State of the rows at position ``pos`` against keys [a, b): the kernel's tile walk over
    that chunk (tiles of ``Bc`` keys from ``a``; the same grid as the kernel's when ``a`` is
    a multiple of ``Bc``; ``loops``: the kernel's choice of tile products). Positions shift
    by ``-a`` so the mask sees the chunk's own keys."""
    g, D = q.shape
    m = np.empty(g, np.float32)
    l = np.empty(g, np.float32)
    acc = np.empty((g, D), np.float32)
    init_state(m, l, acc)
    n = b - a
    if n > 0:
        qpos = np.full(g, pos - a, np.int64)
        attend_span(q, k[a:b], v[a:b], qpos, 0, cdiv(n, Bc), Bc, n,
                    mask.geometry(), scale, m, l, acc,
                    np.empty(2 * g * Bc, np.float32), np.empty(g, np.float32), loops)
    return m, l, acc


def partials(q, k, v, *, bounds, causal=True, q_offset=None, window=None) -> list[State]:
    """One partial State per chunk [bounds[c], bounds[c+1]) of keys.

    q [g, D]: the g query heads of one KV head, all at position ``q_offset`` (default
    ``Lk - 1``, the newest token). k, v [Lk, D]. ``bounds`` [0, b1, ..., Lk], non-decreasing
    (a chunk may hold no key, or no visible key: its state is the merge's identity).
    ``causal``/``window`` as in ``kernels.streaming_attention``; scale 1/sqrt(D).
    """
    q = as_float32("q", q)
    k = as_float32("k", k)
    v = as_float32("v", v)
    if q.ndim != 2 or k.ndim != 2 or v.ndim != 2:
        raise ValueError(f"q must be [g, D] and k, v [Lk, D]; got shapes {q.shape}, "
                         f"{k.shape}, {v.shape}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {k.shape} and {v.shape}")
    if q.shape[1] != k.shape[1] or q.shape[1] < 1:
        raise ValueError(f"head dim D differs or is 0: q has {q.shape[1]}, k has {k.shape[1]}")
    if q.shape[0] < 1 or k.shape[0] < 1:
        raise ValueError(f"need at least one query head and one key, got q {q.shape}, "
                         f"k {k.shape}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_finite(name, x)
    Lk, D = k.shape
    mask = mask_spec(1, Lk, causal, q_offset, window)
    b = _check_bounds(bounds, Lk)
    scale = np.float32(1.0 / np.sqrt(D))
    Bc, loops = active_tuning().decode_for(D)  # the decode kernel's tiles: same grid, sums
    out = []
    for c in range(b.size - 1):
        lo, hi = int(b[c]), int(b[c + 1])
        m, l, acc = _chunk_state(q, k, v, mask.q_offset, lo, hi, mask, scale, Bc, loops)
        out.append(State(m, l, acc, (c,), ((lo, hi),)))
    return out


def merge_pair(a: State, b: State) -> State:
    """The state of a and b together, by the kernels' ``merge_state`` (a is not changed)."""
    if a.acc.shape != b.acc.shape:
        raise ValueError(f"states of different shapes cannot merge: {a.acc.shape} and "
                         f"{b.acc.shape}")
    shared = set(a.chunks) & set(b.chunks)
    if shared:
        raise ValueError(f"chunk(s) {sorted(shared)} are in both states: each chunk must be "
                         "merged exactly once")
    m, l, acc = a.m.copy(), a.l.copy(), a.acc.copy()
    merge_state(m, l, acc, b.m, b.l, b.acc)
    return State(m, l, acc, a.chunks + b.chunks, a.keys + b.keys)


def _check_order(order, C: int) -> list[int]:
    try:
        got = [int(c) for c in order]
        if any(c != o for c, o in zip(got, order, strict=True)):
            raise ValueError
    except (TypeError, ValueError) as e:
        raise TypeError(f"order must be a sequence of chunk indices, got {order!r}") from e
    if sorted(got) != list(range(C)):
        raise ValueError(f"order must name every chunk 0..{C - 1} exactly once, got {got}")
    return got


def merge(states: list[State], order) -> tuple[np.ndarray, np.ndarray]:
    """Merge the states one by one in ``order`` (a permutation of their indices), then
    normalize: (O [g, D], LSE [g]) float32. Every order gives the same result up to float32
    rounding, because the merge is associative and commutative."""
    if not states:
        raise ValueError("states is empty: there is nothing to merge")
    order = _check_order(order, len(states))
    total = states[order[0]]
    for c in order[1:]:
        total = merge_pair(total, states[c])
    return total.finalized()


def merge_weights(states: list[State], lse: np.ndarray) -> np.ndarray:
    """[C, g] the share exp(LSE_c - LSE) of each chunk in the output (0 for an empty chunk,
    and for every chunk when no key is visible at all)."""
    w = np.zeros((len(states), lse.shape[0]))
    seen = np.isfinite(lse)
    for c, s in enumerate(states):
        lse_c = s.lse.astype(np.float64)
        ok = seen & np.isfinite(lse_c)
        w[c, ok] = np.exp(lse_c[ok] - lse[ok])
    return w


def kernel_bounds(Lk: int, D: int, *, B: int = 1, Hkv: int = 1, causal: bool = True,
                  q_offset: int | None = None, window: int | None = None) -> list[int]:
    """Key bounds [0, ..., Lk] of the chunks the decode kernel uses for this problem.

    The kernel walks the tiles of the visible span only, ``per`` tiles (of the decode's KV
    block for D, ``kernels.decode_block``) per chunk (``kernels.decode_split``); keys before
    that span are invisible and become one empty chunk here, keys after it (none, for a
    decode step) likewise."""
    mask = mask_spec(1, Lk, causal, q_offset, window)
    Bc = decode_block(D)
    per, C = decode_split(B, Hkv, Lk, Bc, q_offset=mask.q_offset, causal=mask.causal,
                          window=mask.window)
    lo, hi = row_span(mask.q_offset, Lk, mask.causal, mask.window)
    j_lo = lo // Bc
    j_hi = max(cdiv(hi, Bc), j_lo + 1)
    cuts = [min((j_lo + c * per) * Bc, Lk) for c in range(C)] + [min(j_hi * Bc, Lk)]
    bounds = ([0] if cuts[0] > 0 else []) + cuts + ([Lk] if cuts[-1] < Lk else [])
    return bounds


def equal_bounds(Lk: int, C: int) -> list[int]:
    """C chunks of (nearly) equal size over [0, Lk); some are empty when C > Lk."""
    if C < 1:
        raise ValueError(f"the number of chunks C must be >= 1, got {C}")
    return [round(c * Lk / C) for c in range(C + 1)]


# -- the lab's inputs and the engine's own check -----------------------------------------------

def lab_inputs(scenario: str, Lk: int, D: int, g: int, seed: int = 0):
    """(q_prefill [g, Lk, D], k [Lk, D], v [Lk, D]) for one KV head and its g query heads from
    ``attnviz.scenarios``; the decode query is the last row, ``q_prefill[:, -1]``, which is
    the decode view's query (head 0 is the token the stepper traces in decode mode)."""
    from .scenarios import generate

    q_dec, k, v = generate(scenario, 1, Lk, D, seed=seed, Hq=g, Hkv=1)
    q_all = generate(scenario, Lk, Lk, D, seed=seed, Hq=g, Hkv=1)[0]
    q_all[0, :, -1] = q_dec[0, :, 0]
    return q_all[0], k[0, 0], v[0, 0]


def prefill_check(q_prefill, k, v, *, causal=True, window=None) -> dict:
    """The engine's own check: decoding token t (the last row) against the cache gives the
    last row of a prefill of all t tokens. Both through ``kernels.streaming_attention`` (the
    split-KV decode path and the Q-block prefill path), beside the float64 oracle."""
    from kernels import streaming_attention

    from .reference import attention_reference

    kv = (k[None, None], v[None, None])  # [1, 1, Lk, D]: one KV head
    O_pre, lse_pre = streaming_attention(q_prefill[None], *kv, causal=causal, window=window,
                                         return_lse=True)  # [1, g, Lk, D]
    O_dec, lse_dec = streaming_attention(q_prefill[None, :, -1:], *kv, causal=causal,
                                         window=window, return_lse=True)  # [1, g, 1, D]
    O_ref, lse_ref = attention_reference(q_prefill[:, -1:], k, v, causal=causal,
                                         window=window)  # [g, 1, D]
    last = (O_pre[0, :, -1], lse_pre[0, :, -1])
    dec = (O_dec[0, :, 0], lse_dec[0, :, 0])
    return {
        "O_decode": dec[0], "lse_decode": dec[1], "O_prefill_last": last[0],
        "lse_prefill_last": last[1], "O_ref": O_ref[:, 0], "lse_ref": lse_ref[:, 0],
        "decode_vs_prefill": float(np.abs(dec[0] - last[0]).max()),
        "decode_vs_oracle": float(np.abs(dec[0] - O_ref[:, 0]).max()),
        "prefill_vs_oracle": float(np.abs(last[0] - O_ref[:, 0]).max()),
    }
