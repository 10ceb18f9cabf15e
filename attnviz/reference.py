"""The float64 oracle: naive masked softmax attention, obviously correct and slow.

Materializes S, applies the mask from ``masks.visible_mask``, softmaxes each row with the max
subtracted, multiplies by V. GQA by repeating K/V heads (fine for an oracle). A row that sees
no key gets O = 0 and LSE = -inf, the convention the kernels follow. A sink logit s per query
head is one more term of every row's denominator: m = max(m, s), l += exp(s - m); a row
that sees no key then gets O = 0 and LSE = s.

``attention_backward_reference`` gives the float64 analytic gradients (dq, dk, dv) from the
same masked, normalized P, with the textbook softmax Jacobian: dS = P * (dP - rowsum(P *
dP)), where the kernels use the FlashAttention identity rowsum(P * dP) = rowsum(dO * O).
"""
from __future__ import annotations

import numpy as np

from .masks import visible_mask


def _softmax(q, k, *, causal, q_offset, window, sinks, prefix, doc_ids, sink_logits, scale):
    """The masked, normalized P [..., Lq, Lk] and LSE [..., Lq] in float64, with the K heads
    repeated per query head (GQA), the scale used and the group size.

    q [..., Hq, Lq, D] or [Lq, D]; k [..., Hkv, Lk, D] or [Lk, D], float64."""
    Lq, D = q.shape[-2:]
    Lk = k.shape[-2]
    group = q.shape[1] // k.shape[1] if q.ndim == 4 else 1
    kr = np.repeat(k, group, axis=1) if group > 1 else k  # [B, Hq, Lk, D]
    if q_offset is None:
        q_offset = Lk - Lq
    if scale is None:
        scale = 1.0 / np.sqrt(D)
    vis = visible_mask(Lq, Lk, causal=causal, q_offset=q_offset, window=window or 0,
                       sinks=sinks or 0, prefix=prefix or 0, doc_ids=doc_ids)
    S = np.where(vis, scale * (q @ np.swapaxes(kr, -1, -2)), -np.inf)  # [..., Lq, Lk]
    m = S.max(axis=-1, keepdims=True)
    s = np.array(-np.inf)
    if sink_logits is not None:
        s = np.asarray(sink_logits, np.float64)
        # [Hq, 1, 1] broadcasts over [..., Hq, Lq, 1]; one head's number over [Lq, 1]
        s = s.reshape(s.shape + (1, 1)) if q.ndim > 2 else s.reshape(1, 1)
        m = np.maximum(m, s)
    seen = np.isfinite(m)  # rows that see at least one key (or a sink logit)
    E = np.exp(S - np.where(seen, m, 0.0))  # 0 on masked entries
    l = E.sum(axis=-1, keepdims=True) + np.exp(s - np.where(seen, m, 0.0))
    P = np.where(seen, E / np.where(seen, l, 1.0), 0.0)
    lse = np.where(seen, m + np.log(np.where(seen, l, 1.0)), -np.inf)[..., 0]
    return P, lse, kr, scale, group


def attention_reference(q, k, v, *, causal=True, q_offset=None, window=None, sinks=None,
                        prefix=None, doc_ids=None, sink_logits=None, scale=None):
    """q [..., Hq, Lq, D] or [Lq, D]; k, v [..., Hkv, Lk, D] or [Lk, D] -> (O, LSE) in float64.

    sink_logits: [Hq] (a number for one head [Lq, D])."""
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    P, lse, _, _, group = _softmax(q, k, causal=causal, q_offset=q_offset, window=window,
                                   sinks=sinks, prefix=prefix, doc_ids=doc_ids,
                                   sink_logits=sink_logits, scale=scale)
    vr = np.repeat(v, group, axis=1) if group > 1 else v  # [B, Hq, Lk, D]
    return P @ vr, lse  # a row that sees no key has P = 0: O = 0


def attention_backward_reference(q, k, v, dout, *, causal=True, q_offset=None, window=None,
                                 sinks=None, prefix=None, doc_ids=None, sink_logits=None,
                                 scale=None):
    """Gradients of ``sum(dout * O)`` w.r.t. q [..., Hq, Lq, D], k, v [..., Hkv, Lk, D] (or
    one head [L, D]), in float64: (dq, dk, dv). GQA: dk and dv sum over each group's heads.

    P = softmax of the masked scores (a sink logit only adds to the denominator);
    dV = P^T dO; dP = dO V^T; dS = P * (dP - rowsum(P * dP)); dQ = scale dS K;
    dK = scale dS^T Q. Rows that see no key have P = 0 and add nothing.
    """
    q = np.asarray(q, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    dout = np.asarray(dout, dtype=np.float64)
    P, _, kr, scale, group = _softmax(q, k, causal=causal, q_offset=q_offset, window=window,
                                      sinks=sinks, prefix=prefix, doc_ids=doc_ids,
                                      sink_logits=sink_logits, scale=scale)
    vr = np.repeat(v, group, axis=1) if group > 1 else v
    Lk, D = k.shape[-2:]
    dV = np.swapaxes(P, -1, -2) @ dout  # [..., Lk, D]
    dP = dout @ np.swapaxes(vr, -1, -2)  # [..., Lq, Lk]
    dS = P * (dP - (P * dP).sum(axis=-1, keepdims=True))
    dQ = scale * (dS @ kr)
    dK = scale * (np.swapaxes(dS, -1, -2) @ q)
    if group > 1:  # sum the group's query heads into their KV head
        B, Hq = q.shape[:2]
        dK = dK.reshape(B, Hq // group, group, Lk, D).sum(axis=2)
        dV = dV.reshape(B, Hq // group, group, Lk, D).sum(axis=2)
    return dQ, dK, dV
