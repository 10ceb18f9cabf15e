"""Argument checking shared by the kernels and the traced driver.

Public functions validate here and hand clean, float32, C-contiguous arrays and plain
numbers to the jitted code, which checks nothing. Every error names the argument, what it
got and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .tile import Mask

ALLOWED_DTYPES = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class MaskSpec:
    """Who sees whom. Query row r sits at absolute position ``q_offset + r``.

    causal: keys ``<= q_offset + r`` are visible (bottom-right aligned by default);
    window:  with causal, also keys ``>= q_offset + r - window + 1``; 0 means no window.
    sinks:   with a window, the first ``sinks`` keys stay visible (StreamingLLM); 0: none.
    prefix:  with causal (no window), keys ``<= max(p, prefix - 1)`` (prefix-LM); 0: none.
    doc_ids: with causal, one non-decreasing document id per key (packed sequences): a query
             at p sees only keys of document ``doc_ids[p]``; None: one document.
    sink_logits: one extra logit per query head in every row's softmax (gpt-oss); None: none.
    """

    causal: bool
    q_offset: int
    window: int
    sinks: int = 0
    prefix: int = 0
    doc_ids: tuple[int, ...] | None = None  # a tuple, so the spec stays a hashable value
    sink_logits: tuple[float, ...] | None = None

    def geometry(self) -> Mask:
        """The Mask the jitted code takes: documents as each position's document start."""
        doc_start = np.empty(0, np.int64)
        if self.doc_ids is not None:
            ids = np.asarray(self.doc_ids, np.int64)
            doc_start = np.searchsorted(ids, ids, side="left").astype(np.int64)
        return Mask(self.causal, self.window, self.sinks, self.prefix, doc_start)

    def keywords(self) -> dict:
        """The mask as the keywords of the public functions (and of the oracle)."""
        return {"causal": self.causal, "q_offset": self.q_offset if self.causal else None,
                "window": self.window or None, "sinks": self.sinks or None,
                "prefix": self.prefix or None, "doc_ids": self.doc_ids,
                "sink_logits": self.sink_logits}

    def sink_array(self, Hq: int) -> np.ndarray:
        """The sink logits as float32 [Hq], -inf where there is none."""
        if self.sink_logits is None:
            return np.full(Hq, -np.inf, np.float32)
        return np.asarray(self.sink_logits, np.float32)


def as_float32(name: str, x) -> np.ndarray:
    """``x`` as a C-contiguous float32 array; TypeError for anything but float16/32/64."""
    x = np.asarray(x)
    if x.dtype.type not in ALLOWED_DTYPES:
        raise TypeError(
            f"{name} has dtype {x.dtype}; allowed dtypes are float16, float32 and float64"
        )
    return np.ascontiguousarray(x, dtype=np.float32)


def check_finite(name: str, x: np.ndarray) -> None:
    if not np.isfinite(x).all():
        raise ValueError(
            f"{name} contains NaN or Inf; attention inputs must be finite "
            "(pass check_finite=False to skip this check)"
        )


def name_non_finite(q, k, v) -> None:
    """Raise ``check_finite``'s error for the first of q, k, v holding a NaN or Inf (called
    once a result came out non-finite: the scan is paid only then)."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_finite(name, x)


def check_block(name: str, value, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _count(name: str, value, lo: int, hi: int, what: str) -> int:
    """A keyword that is None/0 (off) or an int in [lo, hi]."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer or None, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name}={value} is out of range: {what} must lie in [{lo}, {hi}]")
    return int(value)


def check_doc_ids(doc_ids, Lk: int) -> tuple[int, ...]:
    """doc_ids as a tuple of Lk non-decreasing ints."""
    ids = np.asarray(doc_ids)
    if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"doc_ids must be an integer array, got dtype {ids.dtype}")
    if ids.shape != (Lk,):
        raise ValueError(f"doc_ids must have shape [Lk] = ({Lk},) (one id per key), "
                         f"got {ids.shape}")
    if (np.diff(ids) < 0).any():
        at = int(np.argmax(np.diff(ids) < 0))
        raise ValueError(f"doc_ids must be non-decreasing (packed documents in order), but "
                         f"doc_ids[{at}]={ids[at]} > doc_ids[{at + 1}]={ids[at + 1]}")
    return tuple(ids.astype(np.int64).tolist())


def check_sink_logits(sink_logits, Hq: int) -> tuple[float, ...]:
    """sink_logits as a tuple of Hq finite floats (a plain number counts as [1])."""
    x = np.asarray(sink_logits)
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.floating)
                               or np.issubdtype(x.dtype, np.integer)):
        raise TypeError(f"sink_logits must be a float array [Hq], got dtype {x.dtype}")
    x = x.reshape(1) if x.ndim == 0 and Hq == 1 else x
    if x.shape != (Hq,):
        raise ValueError(f"sink_logits must have shape [Hq] = ({Hq},) (one per query head), "
                         f"got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("sink_logits must be finite (leave it None for no sink)")
    return tuple(float(np.float32(v)) for v in x)


def mask_spec(Lq: int, Lk: int, causal, q_offset, window, *, sinks=None, prefix=None,
              doc_ids=None, sink_logits=None, Hq: int = 1) -> MaskSpec:
    """Validate the mask keywords. ``q_offset`` is allowed in ``[1 - Lq, Lk - 1]``: every
    offset in that range leaves at least the last query row seeing a key. Rows placed before
    position 0 see no key and return O = 0, LSE = -inf (FlashAttention's convention), or
    LSE = the sink logit.

    Combinations: ``sinks`` needs ``window``; ``prefix`` needs causal and no window;
    ``doc_ids`` needs causal and neither sinks nor prefix; ``sink_logits`` goes with any
    mask. Anything else raises a ValueError naming the arguments."""
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal must be True or False, got {causal!r}")
    if q_offset is None:
        q_offset = Lk - Lq  # bottom-right: the last query row sees the last key
    elif isinstance(q_offset, bool) or not isinstance(q_offset, (int, np.integer)):
        raise TypeError(f"q_offset must be an integer, got {q_offset!r}")
    elif not causal:
        raise ValueError("q_offset only applies with causal=True (full attention has no diagonal)")
    elif not (1 - Lq <= q_offset <= Lk - 1):
        raise ValueError(
            f"q_offset={q_offset} is out of range: with Lq={Lq} and Lk={Lk} it must lie in "
            f"[{1 - Lq}, {Lk - 1}] (query row r sits at position q_offset + r)"
        )
    if window is None:
        window = 0
    elif isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise TypeError(f"window must be a positive integer or None, got {window!r}")
    elif not causal:
        raise ValueError(
            "window requires causal=True (a sliding window looks back from each query)"
        )
    elif window < 1:
        raise ValueError(f"window must be >= 1 (the query sees itself), got {window}")
    sinks = _count("sinks", sinks, 0, Lk, "the number of sink keys")
    prefix = _count("prefix", prefix, 0, Lk, "the prefix length")
    if sinks and not window:
        raise ValueError(f"sinks={sinks} needs a sliding window (window=W): without one every "
                         "causal row already sees the first keys")
    if prefix and not causal:
        raise ValueError(f"prefix={prefix} needs causal=True (prefix-LM: causal after the "
                         "prefix)")
    if prefix and window:
        raise ValueError(f"prefix={prefix} and window={window} cannot be combined (prefix-LM "
                         "is causal without a window)")
    docs = None
    if doc_ids is not None:
        if not causal:
            raise ValueError("doc_ids needs causal=True (a query sees its own document "
                             "causally)")
        if sinks or prefix:
            raise ValueError(f"doc_ids cannot be combined with sinks={sinks} or "
                             f"prefix={prefix} (which document would they belong to?)")
        docs = check_doc_ids(doc_ids, Lk)
    sink = None if sink_logits is None else check_sink_logits(sink_logits, Hq)
    return MaskSpec(bool(causal), int(q_offset), int(window), sinks, prefix, docs, sink)


def check_scale(scale, D: int) -> float:
    if scale is None:
        return 1.0 / math.sqrt(D)
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating, np.integer)):
        raise TypeError(f"scale must be a positive number, got {scale!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return float(scale)


def check_qkv(q, k, v, *, ndim: int, finite: bool):
    """Shapes for ``ndim=4``: q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D]; for ``ndim=2`` (one
    head, the traced driver): q [Lq, D], k/v [Lk, D]. Returns float32 copies/views."""
    layout = "[B, H, L, D]" if ndim == 4 else "[L, D]"
    arrays = []
    for name, x in (("q", q), ("k", k), ("v", v)):
        x = as_float32(name, x)
        if x.ndim != ndim:
            raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {x.shape}")
        arrays.append(x)
    q, k, v = arrays
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {k.shape} and {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"head dim D differs: q has {q.shape[-1]}, k has {k.shape[-1]}")
    if q.shape[-1] < 1:
        raise ValueError("head dim D must be >= 1")
    if k.shape[-2] == 0:
        raise ValueError("k and v have no keys (Lk == 0): attention needs at least one key")
    if ndim == 4:
        if q.shape[0] != k.shape[0]:
            raise ValueError(f"batch B differs: q has {q.shape[0]}, k has {k.shape[0]}")
        Hq, Hkv = q.shape[1], k.shape[1]
        if Hkv < 1 or Hq % Hkv != 0:
            raise ValueError(
                f"query heads Hq={Hq} must be a multiple of KV heads Hkv={Hkv} (GQA groups)"
            )
    if finite:
        for name, x in (("q", q), ("k", k), ("v", v)):
            check_finite(name, x)
    return q, k, v
