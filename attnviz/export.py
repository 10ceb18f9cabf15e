"""A Trace as files: JSON (everything, nested) and CSV (one line per step and query row).

Both are built from the recorded numbers; -inf (a row that has seen no key) is written as
the string "-inf" in JSON (JSON has no infinity) and as ``-inf`` in CSV. Figures export as
the PNGs the page shows (``attnviz.images.Figure.titled_png``).
"""
from __future__ import annotations

import csv
import io
import json
import math

from .trace import Trace

STEP_FIELDS = ("m_before", "s_max", "m", "alpha", "l_before", "p_sum", "l", "acc_norm")


def _num(x) -> float | str:
    x = float(x)
    return x if math.isfinite(x) else ("-inf" if x < 0 else "inf" if x > 0 else "nan")


def trace_dict(trace: Trace, meta: dict | None = None) -> dict:
    """The trace as JSON-ready data: config, tile grid, steps with per-row numbers, O, LSE."""
    c = trace.config
    return {
        "meta": meta or {},
        "config": {"Lq": c.Lq, "Lk": c.Lk, "D": c.D, "Br": c.Br, "Bc": c.Bc, "Tr": c.Tr,
                   "Tc": c.Tc, "causal": c.mask.causal, "q_offset": c.mask.q_offset,
                   "window": c.mask.window, "sinks": c.mask.sinks, "prefix": c.mask.prefix,
                   "doc_ids": None if c.mask.doc_ids is None else list(c.mask.doc_ids),
                   "sink_logit": None if c.mask.sink_logits is None else c.mask.sink_logits[0],
                   "scale": c.scale},
        "tile_status": trace.tile_status.tolist(),
        "counts": trace.counts,
        "steps": [
            {"n": s.n, "i": s.i, "j": s.j, "kind": s.kind, "rows": list(c.rows(s.i)),
             **{f: [_num(x) for x in getattr(s, f)] for f in STEP_FIELDS}}
            for s in trace.steps
        ],
        "block_done_after": {str(i): n for i, n in trace.block_done_after.items()},
        "O": [[_num(x) for x in row] for row in trace.out],
        "LSE": [_num(x) for x in trace.lse],
    }


def trace_json(trace: Trace, meta: dict | None = None) -> str:
    return json.dumps(trace_dict(trace, meta))


def trace_csv(trace: Trace) -> str:
    """Columns: n, i, j, kind, row, then STEP_FIELDS; one line per (step, row of its block)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("n", "i", "j", "kind", "row") + STEP_FIELDS)
    for s in trace.steps:
        i0, _ = trace.config.rows(s.i)
        cols = [getattr(s, f) for f in STEP_FIELDS]
        for t in range(len(s.m)):
            w.writerow([s.n, s.i, s.j, s.kind, i0 + t] + [repr(float(a[t])) for a in cols])
    return buf.getvalue()
