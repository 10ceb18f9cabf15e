"""Argument checking shared by the kernels and the traced driver.

Public functions validate here and hand clean, float32, C-contiguous arrays and plain
numbers to the jitted code, which checks nothing. Every error names the argument, what it
got and what is allowed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALLOWED_DTYPES = (np.float16, np.float32, np.float64)


@dataclass(frozen=True)
class MaskSpec:
    """Who sees whom. Query row r sits at absolute position ``q_offset + r``.

    causal: keys ``<= q_offset + r`` are visible (bottom-right aligned by default);
    window:  with causal, also keys ``>= q_offset + r - window + 1``; 0 means no window.
    """

    causal: bool
    q_offset: int
    window: int


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


def check_block(name: str, value, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def mask_spec(Lq: int, Lk: int, causal, q_offset, window) -> MaskSpec:
    """Validate the mask keywords. ``q_offset`` is allowed in ``[1 - Lq, Lk - 1]``: every
    offset in that range leaves at least the last query row seeing a key. Rows placed before
    position 0 see no key and return O = 0, LSE = -inf (FlashAttention's convention)."""
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
    return MaskSpec(bool(causal), int(q_offset), int(window))


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
