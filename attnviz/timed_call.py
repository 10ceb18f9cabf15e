"""The kernel call the timing panel times for a view, and how the kernel cuts it, in words.

Pure (no Streamlit): ``problem`` turns the sidebar's configuration into one call
(``timing.Problem``), at another length for the sweeps; ``layout`` and ``sweep_layout`` say
which blocks or decode chunks the streaming kernel uses for it (tuned per host and, for
prefills against many keys, per length); ``model_note`` why the memory model of the call as
timed may differ from the Memory tab's. ``attnviz/ui/timing.py`` draws the panel.
"""
from __future__ import annotations

import math

from .timing import Problem
from .viewconfig import ViewConfig


def problem(cfg: ViewConfig, L: int | None = None, blocks: str = "kernel") -> Problem:
    """The configuration as one kernel call; ``L`` replaces the sequence length (sweeps);
    ``blocks``: "kernel" (None: the kernel's tuned defaults) or "stepper" (cfg.Br x cfg.Bc)."""
    Lq, Lk = cfg.Lq, cfg.Lk
    if L is not None:
        Lq, Lk = {"prefill": (L, L), "chunked": (min(cfg.chunk, L - 1), L),
                  "decode": (1, L)}[cfg.mode]
    Br, Bc = (cfg.Br, cfg.Bc) if blocks == "stepper" else (None, None)
    return Problem(cfg.B, cfg.Hq, cfg.Hkv, Lq, Lk, cfg.D, causal=cfg.causal,
                   q_offset=cfg.q_offset, window=cfg.window, Br=Br, Bc=Bc,
                   sinks=cfg.sinks if cfg.mask == "sinks" else 0,
                   prefix=cfg.prefix if cfg.mask == "prefix" else 0,
                   docs=cfg.docs if cfg.mask == "docs" else 0, sink_logit=cfg.sink_logit)


def layout(p: Problem) -> str:
    """How the streaming kernel cuts this call: tiles in prefill, chunks in decode. Call on
    the thread that times (decode's chunk count follows its thread count)."""
    Br, Bc = p.blocks
    default = "" if p.Br else " (kernel default)"
    if p.Lq > 1:
        return f"streaming blocks {Br} x {Bc}{default}"
    per, C = p.split
    return (f"streaming decode splits each KV head's keys into {C} chunk{'s' * (C > 1)} of "
            f"up to {per} tile{'s' * (per > 1)} of {Bc} keys{default}, merged at the end")


def sweep_layout(ps: list[Problem]) -> str:
    """``layout`` over a sweep's problems (lengths ascending): one text, or, when the kernel's
    blocks change with the length (the autotune's blocks for prefills against many keys),
    each text with the lengths it holds for. Decode names its first length's split."""
    runs: list[list] = []  # [text, first L, last L]
    for p in ps if ps and ps[0].Lq > 1 else ps[:1]:
        text = layout(p)
        if runs and runs[-1][0] == text:
            runs[-1][2] = p.Lk
        else:
            runs.append([text, p.Lk, p.Lk])
    if len(runs) < 2:
        return runs[0][0] if runs else ""
    return "; ".join(f"{text} at L = {lo}" + (f"-{hi}" if hi > lo else "")
                     for text, lo, hi in runs)


SWEEP_L_MIN = 64  # the sweep's shortest length, when the configuration's own L is that short


def sweep_Ls(cfg: ViewConfig, L_max: int) -> list[int]:
    """The sweep's lengths: powers of two from 256 up to ``L_max``, starting lower (down to
    ``SWEEP_L_MIN``) when the configuration's own L is shorter, so that its "why" covers it;
    in chunked prefill only lengths longer than the chunk."""
    start = min(8, max(int(math.log2(SWEEP_L_MIN)), int(math.log2(max(cfg.Lk, 1)))))
    Ls = [2**k for k in range(start, int(math.log2(L_max)) + 1)]
    return [L for L in Ls if cfg.mode != "chunked" or L > cfg.chunk]


def model_note(cfg: ViewConfig, p: Problem) -> str:
    """Which blocks the model column counts, and why it may differ from the Memory tab's
    figure (that one uses the sidebar's Br x Bc)."""
    Br, Bc = p.blocks
    if p.Lq == 1:
        return (f"The model column is the Memory tab's formula for the call as timed: the "
                f"decode path's tiles of {Bc} keys and its chunks' partial states.")
    same = (Br, Bc) == (cfg.Br, cfg.Bc)
    return (f"The model column is the Memory tab's formula for the call as timed: streaming "
            f"blocks {Br} x {Bc}" + (" (the sidebar's, as in the Memory tab)." if same else
                                     f"{' (the kernel default)' if not p.Br else ''}, not the "
                                     f"sidebar's {cfg.Br} x {cfg.Bc} that the Memory tab uses, "
                                     "so its streaming figure differs from the Memory tab's; "
                                     "choose \"the stepper's Br x Bc\" to time those."))
