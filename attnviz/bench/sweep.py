"""The block-size sweep: streaming attention over a grid of (q_block Br, kv_block Bc).

``python -m attnviz.bench --sweep-blocks`` prints it per D; the app's timing panel can draw
``Sweep.ms`` as a heatmap. Every grid point passes the same correctness gate as any contender.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from kernels import default_blocks

from .cases import Case
from .contenders import make_streaming
from .measure import Progress, Result, Settings, _quiet, run_case


@dataclass
class Sweep:
    """Streaming time over a grid of (Br, Bc) for one D and L: ``ms[i, j]`` for
    ``q_blocks[i]`` x ``kv_blocks[j]`` (NaN where the gate refused the result)."""

    case: Case
    q_blocks: list[int]
    kv_blocks: list[int]
    ms: np.ndarray  # [len(q_blocks), len(kv_blocks)]
    default: tuple[int, int]
    results: list[Result]

    @property
    def best(self) -> tuple[int, int] | None:
        if np.isnan(self.ms).all():
            return None
        i, j = np.unravel_index(np.nanargmin(self.ms), self.ms.shape)
        return self.q_blocks[i], self.kv_blocks[j]

    def ms_at(self, Br: int, Bc: int) -> float | None:
        if Br in self.q_blocks and Bc in self.kv_blocks:
            x = self.ms[self.q_blocks.index(Br), self.kv_blocks.index(Bc)]
            return None if np.isnan(x) else float(x)
        return None

    def to_dict(self) -> dict:
        return {"case": self.case.to_dict(), "q_blocks": self.q_blocks,
                "kv_blocks": self.kv_blocks,
                "ms": [[None if np.isnan(x) else float(x) for x in row] for row in self.ms],
                "best": self.best, "default": self.default,
                "best_ms": self.ms_at(*self.best) if self.best else None,
                "default_ms": self.ms_at(*self.default)}


def sweep_blocks(case: Case, q_blocks: list[int], kv_blocks: list[int],
                 settings: Settings | None = None, progress: Progress = _quiet) -> Sweep:
    """Time ``streaming_attention`` on ``case`` at every (q_block, kv_block), each gated
    against the oracle like any contender, all timed round-robin."""
    settings = settings or Settings()
    grid = [make_streaming(Br, Bc, name=f"Br={Br} Bc={Bc}", label=f"streaming {Br}x{Bc}")
            for Br in q_blocks for Bc in kv_blocks]
    # one kernel on one thread pool: no other pool left spinning between samples to settle
    results = run_case(case, grid, replace(settings, memory=False, roof_probes=False,
                                           settle_s=0.0), progress)
    ms = np.array([r.median_s * 1e3 if r.median_s else np.nan for r in results])
    return Sweep(case, list(q_blocks), list(kv_blocks), ms.reshape(len(q_blocks), -1),
                 tuple(default_blocks(case.D, case.Lk)), results)
