"""The bug lab: the classic mistakes of the online softmax, as variants of the traced driver.

``run_trace(..., bug=NAME)`` runs one of them; the timed kernels (``kernels/``) are never
touched. Two kinds:

* **update bugs** change the tile update itself. They all run through ONE parametrized
  float32 NumPy step (``tile_step``) whose flags say which line of the algorithm is wrong;
  the scores S it starts from are the jitted routine's (same GEMM, same mask).
* **mask bugs** keep the real (jitted) update and give the driver a wrong mask geometry
  (``driver_mask``): the diagonal aligned top-left, or a window one key too wide.

``bug=None`` is the real algorithm: ``run_trace`` then calls ``kernels.tile.tile_update``
exactly as before, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kernels.validate import MaskSpec

BUGS: dict[str, str] = {
    "no_max_carry": "m_new = rowmax(this tile) instead of max(m_old, rowmax): exact in exact "
                    "arithmetic, but alpha = exp(m_old - m_new) can exceed 1 and overflows "
                    "with large logits; that is why the max is carried",
    "no_acc_rescale": "acc is not multiplied by alpha when the max moves",
    "no_l_rescale": "l is not multiplied by alpha when the max moves",
    "normalize_each_tile": "acc is divided by l after every tile instead of once at the end",
    "top_left": "the causal diagonal aligned top-left (q_offset = 0) when the KV cache needs "
                "bottom-right",
    "window_off_by_one": "a sliding window of W + 1 keys instead of W",
    "no_max_subtraction": "P~ = exp(S) with no max subtracted: overflows float32 with large "
                          "logits",
}
MASK_BUGS = ("top_left", "window_off_by_one")
# bugs whose harm is an overflow of exp in float32: exact on moderate scores, they show only
# with large logits (the bug lab offers that scenario when they do not depart)
OVERFLOW_BUGS = ("no_max_carry", "no_max_subtraction")


@dataclass(frozen=True)
class Flags:
    """Which lines of the update are right (all True: the real algorithm)."""

    carry_max: bool = True  # m' = max(m, rowmax(S)), not rowmax(S)
    rescale_acc: bool = True  # acc' = alpha * acc + P~V, not acc + P~V
    rescale_l: bool = True  # l' = alpha * l + rowsum(P~), not l + rowsum(P~)
    normalize_at_end: bool = True  # O = acc / l once, not acc /= l after every tile
    subtract_max: bool = True  # P~ = exp(S - m'), not exp(S)


_FLAGS = {
    "no_max_carry": Flags(carry_max=False),
    "no_acc_rescale": Flags(rescale_acc=False),
    "no_l_rescale": Flags(rescale_l=False),
    "normalize_each_tile": Flags(normalize_at_end=False),
    "no_max_subtraction": Flags(subtract_max=False),
}


def check_bug(bug) -> str | None:
    """``bug`` if it is None or a name of ``BUGS``; ValueError listing the valid names."""
    if bug is None or (isinstance(bug, str) and bug in BUGS):
        return bug
    raise ValueError(f"unknown bug {bug!r}; valid names are None or one of: "
                     f"{', '.join(BUGS)}")


def update_flags(bug: str | None) -> Flags | None:
    """The flags of an update bug; None when the real (jitted) update runs."""
    return _FLAGS.get(bug)


def driver_mask(mask: MaskSpec, bug: str | None) -> MaskSpec:
    """The mask the driver walks with: ``mask`` itself unless a mask bug bends it."""
    if bug == "top_left" and mask.causal:
        return replace(mask, q_offset=0)
    if bug == "window_off_by_one" and mask.window:
        return replace(mask, window=mask.window + 1)
    return mask


def changes_nothing(mask: MaskSpec, bug: str | None) -> str | None:
    """Why a mask bug has no effect on this mask (a sentence), or None."""
    if bug == "top_left" and (not mask.causal or mask.q_offset == 0):
        return ("top-left and bottom-right alignment coincide here: the queries already start "
                "at position 0 (Lq = Lk, or no causal mask). Try chunked prefill or decode.")
    if bug == "window_off_by_one" and not mask.window:
        return "this mask has no sliding window. Choose a window mask to see the bug."
    return None


def tile_step(S, Vj, m, l, acc, flags: Flags):
    """One online-softmax step in float32 NumPy with some lines wrong (``flags``).

    S [rows, cols] float32: the scaled scores, masked entries -inf (read only);
    Vj [cols, D]; state m [rows], l [rows], acc [rows, D] float32, updated in place.
    Returns (P~ [rows, cols], alpha [rows]). A row with no visible key in this tile keeps
    its max even under ``no_max_carry`` (only the carry across tiles is wrong); a row that
    has seen no key keeps m = -inf and P~ = 0, as in the real update.
    """
    f32 = np.float32
    s_max = S.max(axis=1) if S.shape[1] else np.full(S.shape[0], -np.inf, f32)  # [rows]
    seen = np.maximum(m, s_max)  # the real m'
    if not flags.subtract_max:
        m_new = np.where(seen > -np.inf, f32(0), f32(-np.inf))  # the shift is 0, not the max
    elif not flags.carry_max:
        m_new = np.where(s_max > -np.inf, s_max, m)
    else:
        m_new = seen
    m_new = m_new.astype(f32)
    with np.errstate(over="ignore", invalid="ignore"):
        alpha = np.where(m_new == m, f32(1), np.exp(m - m_new)).astype(f32)  # [rows]
        shift = np.where(m_new > -np.inf, m_new, f32(0)).astype(f32)
        P = np.exp(S - shift[:, None]).astype(f32)  # [rows, cols]
        p_sum = P.sum(axis=1, dtype=f32)
        l[:] = (alpha * l if flags.rescale_l else l) + p_sum
        acc[:] = (alpha[:, None] * acc if flags.rescale_acc else acc) + P @ Vj
        if not flags.normalize_at_end:
            acc[:] = np.where(l[:, None] > 0, acc / np.where(l > 0, l, f32(1))[:, None], acc)
    m[:] = m_new
    return P, alpha


def finalize(m, l, acc, flags: Flags):
    """(O [rows, D], LSE [rows]) of a buggy state: O = acc / l (or acc itself when it was
    already divided after every tile); a row that saw nothing gets O = 0, LSE = -inf."""
    f32 = np.float32
    seen = l > 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        O = acc if not flags.normalize_at_end else acc / np.where(seen, l, f32(1))[:, None]
        O = np.where(seen[:, None], O, f32(0)).astype(f32)
        lse = np.where(seen, m + np.log(np.where(seen, l, f32(1))), f32(-np.inf)).astype(f32)
    return O, lse
