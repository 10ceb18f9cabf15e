"""The backward pass, tile by tile: FlashAttention-2's backward for one KV head and the query
heads of its group, recording every tile.

``run_backward_trace`` walks the tiles in the backward kernel's own loop order (KV block j
outer; the group's query heads h, then Q blocks i inner) and calls the *same* jitted tile
routine as the kernel (``kernels.backward.backward_tile``), with D = rowsum(dO * O) from the
kernel's ``row_dot``, O and LSE from the forward kernel. Each ``BackwardStep`` keeps the
tile's S, P = exp(S - LSE), dP = dO V^T, dS = P * (dP - D), and the dK_j, dV_j, dQ_i
accumulators before and after it. So that P can be shown to be the forward's P~ / l, the
forward is traced too (``run_trace``): its final per-row m and l give P~ / l = exp(S - m) / l.

Sizes are bounded by the caller (the app caps L): a step holds a few [Br, Bc] and [B, D]
arrays.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernels import streaming_attention
from kernels.backward import backward_tile, row_dot
from kernels.tile import NEG_INF, PARTIAL, SKIPPED, mask_tile_class
from kernels.validate import as_float32, check_finite, check_qkv

from .masks import TILE_NAMES
from .trace import TraceConfig, run_trace, trace_config

# Bytes per float32; the memory model below counts workspaces in these.
F32 = 4


@dataclass(frozen=True)
class BackwardStep:
    """One computed tile of the backward pass: query head h (0-based within the group), Q block
    i against KV block j. Tiles are [rows, keys] float32; accumulators [keys or rows, D]."""

    n: int  # position in the backward's visit order
    j: int  # KV block (outer loop)
    h: int  # query head within the group
    i: int  # Q block (inner loop)
    kind: str  # "full" or "partial"
    S: np.ndarray  # scaled, masked scores (-inf where masked)
    P: np.ndarray  # exp(S - LSE), recomputed from the saved LSE
    P_fwd: np.ndarray  # the forward's P~ / l = exp(S - m) / l with its final m, l (float64)
    m_fwd: np.ndarray  # [rows] the forward's final running max m of each row
    l_fwd: np.ndarray  # [rows] and its final denominator l
    dP: np.ndarray  # dO_i V_j^T
    dS: np.ndarray  # P * (dP - D)
    dK_before: np.ndarray
    dK: np.ndarray  # dK_j after the step, [keys, D]
    dV_before: np.ndarray
    dV: np.ndarray  # dV_j after the step
    dQ_before: np.ndarray
    dQ: np.ndarray  # dQ_i of head h after the step, [rows, D]

    @property
    def rows(self) -> int:
        return self.S.shape[0]

    @property
    def keys(self) -> int:
        return self.S.shape[1]


@dataclass
class BackwardTrace:
    """Everything one traced backward produced; ``dq``/``dk``/``dv`` are final."""

    config: TraceConfig
    q: np.ndarray  # [g, Lq, D] float32: the group's query heads
    k: np.ndarray  # [Lk, D]
    v: np.ndarray  # [Lk, D]
    dout: np.ndarray  # [g, Lq, D]
    out: np.ndarray  # [g, Lq, D] the forward kernel's O
    lse: np.ndarray  # [g, Lq] the forward kernel's LSE
    D: np.ndarray  # [g, Lq] rowsum(dO * O)
    tile_status: np.ndarray  # [Tr, Tc] "skipped" / "full" / "partial" (same for every head)
    steps: list[BackwardStep] = field(default_factory=list)
    dq: np.ndarray | None = None  # [g, Lq, D]
    dk: np.ndarray | None = None  # [Lk, D] summed over the group
    dv: np.ndarray | None = None  # [Lk, D]

    @property
    def group(self) -> int:
        return self.q.shape[0]

    def step_index(self, j: int, h: int, i: int) -> int | None:
        """Visit-order index of tile (h, i, j), or None when it was skipped."""
        for s in self.steps:
            if (s.j, s.h, s.i) == (j, h, i):
                return s.n
        return None


def step_flops(step: BackwardStep, D: int) -> tuple[int, int]:
    """(backward, forward) FLOPs of this tile, a multiply-add counted as 2.

    Backward: 5 GEMMs of rows x keys x D (S = Q K^T again, dP = dO V^T, dV += P^T dO,
    dK += dS^T Q, dQ += dS K); forward: 2 (S = Q K^T, P~ V)."""
    mnk = step.rows * step.keys * D
    return 10 * mnk, 4 * mnk


def total_flops(trace: BackwardTrace) -> tuple[int, int]:
    """(backward, forward) FLOPs summed over the computed tiles."""
    D = trace.config.D
    pairs = [step_flops(s, D) for s in trace.steps]
    return sum(b for b, _ in pairs), sum(f for _, f in pairs)


@dataclass(frozen=True)
class BackwardMemory:
    """Bytes the backward needs beyond its inputs (q, k, v, O, LSE, dO) and outputs."""

    streaming: int  # four [Br, Bc] tiles per worker, D per row, (workers - 1) dQ partials
    stores_P: int  # a backward that keeps P (and builds dS) as full [Lq, Lk] matrices


def memory(c: TraceConfig, heads: int, workers: int) -> BackwardMemory:
    """The two backward passes' extra memory for ``heads`` query heads of Lq x Lk."""
    tiles = workers * 4 * c.Br * c.Bc * F32
    rows = heads * c.Lq * F32  # D = rowsum(dO * O)
    partials = (workers - 1) * heads * c.Lq * c.D * F32
    return BackwardMemory(streaming=tiles + rows + partials,
                          stores_P=2 * heads * c.Lq * c.Lk * F32 + rows)


def run_backward_trace(q, k, v, dout, *, causal=True, q_offset=None, window=None, sinks=None,
                       prefix=None, doc_ids=None, sink_logits=None, scale=None, q_block=32,
                       kv_block=64) -> BackwardTrace:
    """FlashAttention-2's backward on one KV head, recording every tile.

    q, dout [Lq, D] (one head) or [g, Lq, D] (the g query heads of a GQA group); k, v
    [Lk, D]; keywords as in ``kernels.streaming_attention_backward`` (``sink_logits``: one
    number, the same for the group's heads). Returns a ``BackwardTrace`` whose dq, dk, dv
    equal the kernel's (dk, dv summed over the group).
    """
    q = as_float32("q", q)
    if q.ndim == 2:
        q = q[None]
    if q.ndim != 3:
        raise ValueError(f"q must be [Lq, D] or [g, Lq, D], got shape {q.shape}")
    dout = as_float32("dout", dout)
    if dout.ndim == 2:
        dout = dout[None]
    if dout.shape != q.shape:
        raise ValueError(f"dout must have the shape of q {q.shape}, got {dout.shape}")
    check_finite("dout", dout)
    g = q.shape[0]
    _, k, v = check_qkv(q[0], k, v, ndim=2, finite=True)
    check_finite("q", q)
    (Lq, D), Lk = q.shape[1:], k.shape[0]
    c = trace_config(Lq, Lk, D, causal=causal, q_offset=q_offset, window=window, sinks=sinks,
                     prefix=prefix, doc_ids=doc_ids, sink_logits=sink_logits, scale=scale,
                     q_block=q_block, kv_block=kv_block)
    mask_kw = c.mask.keywords()
    if mask_kw["sink_logits"] is not None:
        mask_kw["sink_logits"] = np.full(g, mask_kw["sink_logits"][0], np.float32)
    out, lse = streaming_attention(q[None], k[None, None], v[None, None], scale=c.scale,
                                   q_block=c.Br, kv_block=c.Bc, return_lse=True, **mask_kw)
    out, lse = out[0], lse[0]  # [g, Lq, D], [g, Lq]
    m_fin, l_fin = _forward_state(q, k, v, c)
    Dv = np.empty((g, Lq), np.float32)
    for h in range(g):
        row_dot(dout[h], out[h], Dv[h])
    mk, scale32 = c.mask.geometry(), np.float32(c.scale)
    status = np.empty((c.Tr, c.Tc), dtype=object)
    for i in range(c.Tr):
        for j in range(c.Tc):
            k0, k1 = c.keys(j)
            status[i, j] = TILE_NAMES[mask_tile_class(c.qpos(i), k0, k1, Lk, mk)]
    status = status.astype(str)
    trace = BackwardTrace(config=c, q=q, k=k, v=v, dout=dout, out=out, lse=lse, D=Dv,
                          tile_status=status, dq=np.zeros_like(q), dk=np.zeros_like(k),
                          dv=np.zeros_like(v))
    for j in range(c.Tc):  # KV blocks outer: dK_j, dV_j stay in this loop
        k0, k1 = c.keys(j)
        dKj, dVj = trace.dk[k0:k1], trace.dv[k0:k1]
        for h in range(g):  # GQA: every query head of the group adds to dK_j, dV_j
            for i in range(c.Tr):
                if status[i, j] == TILE_NAMES[SKIPPED]:
                    continue  # no visible key: never computed
                i0, i1 = c.rows(i)
                n, cols = i1 - i0, k1 - k0
                S, P, dP, dS = (np.empty((n, cols), np.float32) for _ in range(4))
                dK0, dV0, dQ0 = dKj.copy(), dVj.copy(), trace.dq[h, i0:i1].copy()
                backward_tile(q[h, i0:i1], k[k0:k1], v[k0:k1], dout[h, i0:i1],
                              lse[h, i0:i1], Dv[h, i0:i1], c.qpos(i), k0, Lk, mk,
                              status[i, j] == TILE_NAMES[PARTIAL], scale32, dKj, dVj,
                              trace.dq[h, i0:i1], S, P, dP, dS)
                trace.steps.append(BackwardStep(
                    n=len(trace.steps), j=j, h=h, i=i, kind=str(status[i, j]), S=S, P=P,
                    P_fwd=_p_over_l(S, m_fin[h, i0:i1], l_fin[h, i0:i1]),
                    m_fwd=m_fin[h, i0:i1].copy(), l_fwd=l_fin[h, i0:i1].copy(), dP=dP, dS=dS,
                    dK_before=dK0, dK=dKj.copy(), dV_before=dV0, dV=dVj.copy(),
                    dQ_before=dQ0, dQ=trace.dq[h, i0:i1].copy()))
    return trace


def _forward_state(q, k, v, c: TraceConfig) -> tuple[np.ndarray, np.ndarray]:
    """The forward's final running max m and denominator l per row, [g, Lq] each, from the
    traced forward of each head (a row with no computed tile keeps its initial state)."""
    g, Lq = q.shape[:2]
    sink = c.mask.sink_array(1)[0]
    m = np.full((g, Lq), sink, np.float32)
    l = np.full((g, Lq), 0.0 if sink == NEG_INF else 1.0, np.float32)
    kw = c.mask.keywords()
    for h in range(g):
        fwd = run_trace(q[h], k, v, scale=c.scale, q_block=c.Br, kv_block=c.Bc, **kw)
        for s in fwd.steps:  # the last step of each Q block holds its final m, l
            i0, i1 = c.rows(s.i)
            m[h, i0:i1], l[h, i0:i1] = s.m, s.l
    return m, l


def _p_over_l(S, m, l) -> np.ndarray:
    """exp(S - m) / l in float64, 0 where masked or where the row saw no key."""
    S = S.astype(np.float64)
    seen = (l > 0)[:, None] & np.isfinite(S)
    return np.where(seen, np.exp(np.where(seen, S - m[:, None], 0.0))
                    / np.where(l > 0, l, 1.0)[:, None], 0.0)
