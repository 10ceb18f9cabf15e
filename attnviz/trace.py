"""The instrumented driver: block-wise streaming attention for one head, step by step.

``run_trace`` walks the tiles in the kernel's order (Q block i outer, KV block j inner) and
calls the *same* jitted routines as the fast kernel (``kernels.tile.mask_tile_class``,
``init_state``, ``tile_update``, ``finalize``), with the kernel's choice of tile products
(``kernels.tile_products``: decode's S and P~V as loops or BLAS, tuned per host), so what the
stepper shows is what the timed kernel computes. With a sink logit s, every row starts from
m = s, l = 1, acc = 0. Along the way it announces events to hooks:

    hook.on_skip(i, j)                     a tile with no visible key, not computed
    hook.on_step(step)                     a tile computed: a ``Step`` with before/after state
    hook.on_block_done(i, O_rows, lse_rows)  Q block i normalized

The built-in recorder keeps them all in a ``Trace``; other hooks (byte counters, per-row
watchers, future labs) plug in without touching the algorithm.

``bug=NAME`` (``attnviz.bugs.BUGS``) runs one of the classic mistakes instead: an update bug
replaces ``tile_update`` by the bug lab's NumPy step (after the same jitted scores), a mask
bug hands the driver a wrong mask. ``bug=None`` calls the jitted routines, bit for bit.

A ``Step`` keeps per-row numbers only (m, l, alpha, ... : Br floats each), so a trace of
L = 4096 with default blocks stays a few MB. The S and P~ tiles of any step are recomputed
on demand by ``Trace.tiles(n)``, calling ``tile_update`` again from the recorded m_before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from kernels.api import default_blocks, tile_products
from kernels.tile import (
    FULL,
    PARTIAL,
    SKIPPED,
    cdiv,
    finalize,
    init_state,
    mask_tile_class,
    tile_update,
)
from kernels.validate import MaskSpec, check_block, check_qkv, check_scale, mask_spec

from . import bugs
from .masks import TILE_NAMES


def departure_tol(O_ref: np.ndarray) -> float:
    """How far a finished row may sit from the oracle and still agree: 1e-4 of the output's
    scale, far above float32 rounding and far below any bug's error (the bug lab's test)."""
    return 1e-4 * max(1.0, float(np.abs(O_ref).max(initial=0.0)))


@dataclass(frozen=True)
class TraceConfig:
    """The geometry of one traced head."""

    Lq: int  # query rows
    Lk: int  # keys
    D: int  # head dim
    Br: int  # Q block (rows per tile)
    Bc: int  # KV block (keys per tile)
    mask: MaskSpec
    scale: float
    # (for S, for P~V): each tile product as plain loops or BLAS, as the kernel computes a
    # call of Lq rows on this host (``kernels.tile_products``: decode's pair is tuned)
    loops: tuple[bool, bool] = (False, False)

    @property
    def Tr(self) -> int:  # number of Q blocks
        return cdiv(self.Lq, self.Br)

    @property
    def Tc(self) -> int:  # number of KV blocks
        return cdiv(self.Lk, self.Bc)

    def rows(self, i: int) -> tuple[int, int]:
        """Query rows [i0, i1) of Q block i."""
        return i * self.Br, min((i + 1) * self.Br, self.Lq)

    def keys(self, j: int) -> tuple[int, int]:
        """Keys [k0, k1) of KV block j."""
        return j * self.Bc, min((j + 1) * self.Bc, self.Lk)

    def qpos(self, i: int) -> np.ndarray:
        """Absolute positions of the rows of Q block i, [rows] int64."""
        i0, i1 = self.rows(i)
        return np.arange(i0, i1, dtype=np.int64) + self.mask.q_offset


@dataclass(frozen=True)
class Driver:
    """How the traced loop computes one tile: the real jitted update, or a bug's variant.

    ``mask`` is the mask the loop walks with (a mask bug bends it; ``TraceConfig.mask`` stays
    the true one, which the oracle uses); ``flags`` are an update bug's, None for the real
    update. Every tile of a trace, first run or replayed, goes through ``update``."""

    config: TraceConfig
    mask: MaskSpec
    flags: bugs.Flags | None = None

    @cached_property
    def geometry(self):
        """The Mask the jitted code takes (built once: documents cost a search)."""
        return self.mask.geometry()

    def qpos(self, i: int) -> np.ndarray:
        """Absolute positions the loop gives the rows of Q block i, [rows] int64."""
        i0, i1 = self.config.rows(i)
        return np.arange(i0, i1, dtype=np.int64) + self.mask.q_offset

    def tile_class(self, i: int, j: int) -> int:
        k0, k1 = self.config.keys(j)
        return mask_tile_class(self.qpos(i), k0, k1, self.config.Lk, self.geometry)

    def init(self, i: int):
        """The state (m [rows], l [rows], acc [rows, D]) of Q block i before its first tile."""
        i0, i1 = self.config.rows(i)
        m = np.empty(i1 - i0, np.float32)
        l = np.empty(i1 - i0, np.float32)
        acc = np.empty((i1 - i0, self.config.D), np.float32)
        init_state(m, l, acc, self.config.mask.sink_array(1)[0])
        return m, l, acc

    def update(self, q, k, v, i: int, j: int, cls: int, m, l, acc):
        """Tile (i, j) of class ``cls`` on the state (updated in place); returns
        (S, P~ [rows, keys], alpha [rows]) float32."""
        c = self.config
        i0, i1 = c.rows(i)
        k0, k1 = c.keys(j)
        rows = i1 - i0
        S = np.empty((rows, k1 - k0), np.float32)
        P = np.empty_like(S)
        alpha = np.empty(rows, np.float32)
        args = (q[i0:i1], k[k0:k1], v[k0:k1], self.qpos(i), k0, c.Lk, self.geometry,
                cls == PARTIAL, np.float32(c.scale))
        if self.flags is None:
            tile_update(*args, m, l, acc, S, P, alpha, c.loops)
            return S, P, alpha
        # the same jitted scores and mask, on a scratch state; then the buggy update
        tile_update(*args, np.full(rows, -np.inf, np.float32), np.zeros(rows, np.float32),
                    np.zeros((rows, c.D), np.float32), S, P, alpha, c.loops)
        P, alpha = bugs.tile_step(S, v[k0:k1], m, l, acc, self.flags)
        return S, P, alpha

    def finalize(self, m, l, acc):
        """(O [rows, D], LSE [rows]) of a finished Q block."""
        if self.flags is not None:
            return bugs.finalize(m, l, acc, self.flags)
        O = np.empty_like(acc)
        lse = np.empty(m.shape[0], np.float32)
        finalize(m, l, acc, O, lse)
        return O, lse


@dataclass(frozen=True)
class Step:
    """One computed tile: Q block i against KV block j, with each row's state around it.

    All arrays are [rows of block i] float32. ``alpha = exp(m_before - m)`` is exactly 1 for
    the rows whose max did not move; elsewhere the old l and acc were rescaled by it.
    """

    n: int  # position in visit order
    i: int  # Q block
    j: int  # KV block
    kind: str  # "full" or "partial"
    m_before: np.ndarray
    m: np.ndarray
    l_before: np.ndarray
    l: np.ndarray
    alpha: np.ndarray
    s_max: np.ndarray  # rowmax of this tile's scaled, masked scores (-inf: row masked here)
    p_sum: np.ndarray  # rowsum of this tile's P~ = exp(S - m)
    acc_norm: np.ndarray  # ||acc|| after the step (the unnormalized output row)

    @property
    def rescaled(self) -> np.ndarray:
        """Bool per row: the running max grew and the old state was rescaled."""
        return self.alpha != 1.0


@dataclass(frozen=True)
class Replay:
    """The accumulator of each row of step n's Q block around the step, [rows, D] float32:
    acc_new = alpha * acc_old + PV (as the loop computed it: a bug may drop the alpha or
    divide by l afterwards)."""

    n: int
    acc_old: np.ndarray
    alpha: np.ndarray  # [rows]
    PV: np.ndarray  # P~ V_j
    acc_new: np.ndarray


def step_label(n: int) -> int:
    """Step n as people count it: 1-based, so the last of N steps reads "step N of N".
    Code, session state and the URL's ``step=`` stay 0-based (``Trace.steps[n]``)."""
    return n + 1


@dataclass
class Trace:
    """Everything one traced run produced. ``out``/``lse`` are final once run_trace returns."""

    config: TraceConfig
    q: np.ndarray  # [Lq, D] float32, as computed
    k: np.ndarray  # [Lk, D]
    v: np.ndarray  # [Lk, D]
    tile_status: np.ndarray  # [Tr, Tc] "skipped" / "full" / "partial"
    steps: list[Step] = field(default_factory=list)
    out: np.ndarray | None = None  # [Lq, D] float32
    lse: np.ndarray | None = None  # [Lq] float32, natural log
    block_done_after: dict[int, int] = field(default_factory=dict)  # i -> last step n of block i
    bug: str | None = None  # attnviz.bugs name, None: the real algorithm
    driver: Driver | None = None  # how the loop computed each tile (run_trace sets it)

    # -- hook interface: the recorder is itself a hook
    def on_skip(self, i: int, j: int) -> None:
        pass  # tile_status already holds the skipped tiles

    def on_step(self, step: Step) -> None:
        self.steps.append(step)

    def on_block_done(self, i: int, O_rows: np.ndarray, lse_rows: np.ndarray) -> None:
        i0, i1 = self.config.rows(i)
        self.out[i0:i1] = O_rows
        self.lse[i0:i1] = lse_rows
        self.block_done_after[i] = len(self.steps) - 1

    # -- queries for the UI
    def step_index(self, i: int, j: int) -> int | None:
        """Visit-order index of tile (i, j), or None when it was skipped."""
        for step in self.steps:
            if step.i == i and step.j == j:
                return step.n
        return None

    def tiles(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(S, P~) of step n, [rows, keys] float32: the step's update, replayed from the
        recorded m_before and l_before."""
        step = self.steps[n]
        m, l = step.m_before.copy(), step.l_before.copy()
        acc = np.zeros((m.shape[0], self.config.D), np.float32)
        cls = PARTIAL if step.kind == "partial" else FULL
        S, P, _ = self.driver.update(self.q, self.k, self.v, step.i, step.j, cls, m, l, acc)
        return S, P

    def replay(self, n: int) -> Replay:
        """The accumulator around step n for every row of its Q block: the block's steps
        replayed from its initial state (the recorded per-row numbers keep the trace small;
        acc is [rows, D] per step and is recomputed, bit for bit, when asked)."""
        step = self.steps[n]
        m, l, acc = self.driver.init(step.i)
        for s in self.row_history(self.config.rows(step.i)[0]):
            cls = PARTIAL if s.kind == "partial" else FULL
            if s.n == n:
                acc_old = acc.copy()
                _, P, alpha = self.driver.update(self.q, self.k, self.v, s.i, s.j, cls,
                                                 m, l, acc)
                k0, k1 = self.config.keys(s.j)
                PV = P @ self.v[k0:k1]  # [rows, D] this tile's contribution
                return Replay(n=n, acc_old=acc_old, alpha=alpha, PV=PV, acc_new=acc)
            self.driver.update(self.q, self.k, self.v, s.i, s.j, cls, m, l, acc)
        raise AssertionError(f"step {n} not in its block's history")  # unreachable

    def row_error(self, O_ref: np.ndarray) -> np.ndarray:
        """[Lq] max |O - O_ref| of each row's final output (inf where O is not finite)."""
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.abs(self.out.astype(np.float64) - O_ref).max(axis=1)
        return np.where(np.isfinite(err), err, np.inf)

    def first_departure(self, O_ref: np.ndarray, tol: float | None = None) -> int | None:
        """The first step at which a finished row's output departs from the oracle by more
        than ``tol`` (default: ``departure_tol``); None when every row agrees."""
        bad = self.row_error(O_ref) > (departure_tol(O_ref) if tol is None else tol)
        ends = [n for i, n in self.block_done_after.items()
                if bad[slice(*self.config.rows(i))].any()]
        return min(ends) if ends else None

    def row_history(self, r: int) -> list[Step]:
        """The steps that updated query row r (those of its Q block), in order."""
        i = r // self.config.Br
        return [s for s in self.steps if s.i == i]

    @property
    def counts(self) -> dict[str, int]:
        names, n = np.unique(self.tile_status, return_counts=True)
        return {name: int(n[list(names).index(name)]) if name in names else 0
                for name in ("full", "partial", "skipped")}


def trace_config(Lq, Lk, D, *, causal=True, q_offset=None, window=None, sinks=None,
                 prefix=None, doc_ids=None, sink_logits=None, scale=None, q_block=None,
                 kv_block=None, loops=None) -> TraceConfig:
    """Validate the keywords once and freeze them (shared by run_trace and the app).
    ``loops``: the tile products (for S, for P~V), True for plain loops, False for BLAS;
    None: the kernel's choice in force for Lq rows (``kernels.tile_products``)."""
    if loops is None:
        loops = tile_products(Lq, D)
    elif not (isinstance(loops, tuple) and len(loops) == 2
              and all(isinstance(x, bool) for x in loops)):
        raise ValueError(f"loops must be None or a pair of bools (for S, for P~V: True for "
                         f"plain loops, False for BLAS), got {loops!r}")
    Br0, Bc0 = default_blocks(D, Lk)
    return TraceConfig(
        Lq=Lq, Lk=Lk, D=D,
        Br=check_block("q_block", q_block, Br0),
        Bc=check_block("kv_block", kv_block, Bc0),
        mask=mask_spec(Lq, Lk, causal, q_offset, window, sinks=sinks, prefix=prefix,
                       doc_ids=doc_ids, sink_logits=sink_logits, Hq=1),
        scale=check_scale(scale, D),
        loops=loops,
    )


def run_trace(q, k, v, *, causal=True, q_offset=None, window=None, sinks=None, prefix=None,
              doc_ids=None, sink_logits=None, scale=None, q_block=32, kv_block=64,
              loops=None, hooks=(), bug=None) -> Trace:
    """Block-wise streaming attention on one head, recording every tile.

    q [Lq, D], k/v [Lk, D] (float16/32/64; computed in float32). Keywords as in
    ``kernels.streaming_attention``; ``sink_logits`` is the traced head's one number.
    ``hooks``: extra objects with any of ``on_skip``, ``on_step``, ``on_block_done``; they
    see the events in order after the recorder. ``bug``: None (the real algorithm) or a name
    of ``attnviz.bugs.BUGS`` (a ValueError lists them); the config keeps the true mask.
    ``loops``: the tile products, as in ``trace_config`` (None: the kernel's in force).
    """
    bug = bugs.check_bug(bug)
    q, k, v = check_qkv(q, k, v, ndim=2, finite=True)
    (Lq, D), Lk = q.shape, k.shape[0]
    c = trace_config(Lq, Lk, D, causal=causal, q_offset=q_offset, window=window, sinks=sinks,
                     prefix=prefix, doc_ids=doc_ids, sink_logits=sink_logits, scale=scale,
                     q_block=q_block, kv_block=kv_block, loops=loops)
    driver = Driver(c, bugs.driver_mask(c.mask, bug), bugs.update_flags(bug))
    status = np.empty((c.Tr, c.Tc), dtype=object)
    trace = Trace(config=c, q=q, k=k, v=v, tile_status=status,
                  out=np.zeros((Lq, D), np.float32), lse=np.zeros(Lq, np.float32),
                  bug=bug, driver=driver)
    listeners = [trace, *hooks]

    def announce(event, *args):
        for h in listeners:
            fn = getattr(h, event, None)
            if fn is not None:
                fn(*args)

    for i in range(c.Tr):
        m, l, acc = driver.init(i)
        for j in range(c.Tc):
            cls = driver.tile_class(i, j)
            status[i, j] = TILE_NAMES[cls]
            if cls == SKIPPED:
                announce("on_skip", i, j)
                continue
            m_before, l_before = m.copy(), l.copy()
            S, P, alpha = driver.update(q, k, v, i, j, cls, m, l, acc)
            with np.errstate(over="ignore", invalid="ignore"):  # a bug's acc may overflow
                acc_norm = np.linalg.norm(acc, axis=1).astype(np.float32)
            step = Step(
                n=len(trace.steps), i=i, j=j, kind=TILE_NAMES[cls],
                m_before=m_before, m=m.copy(), l_before=l_before, l=l.copy(), alpha=alpha,
                s_max=S.max(axis=1), p_sum=P.sum(axis=1, dtype=np.float32),
                acc_norm=acc_norm,
            )
            assert cls in (FULL, PARTIAL)
            announce("on_step", step)
        O_rows, lse_rows = driver.finalize(m, l, acc)
        announce("on_block_done", i, O_rows, lse_rows)
    trace.tile_status = status.astype(str)
    return trace
