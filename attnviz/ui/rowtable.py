"""The rows table of the current step: each row's m, l and alpha around the step.

A tiny custom component (components v2, inline JavaScript, no bundle) that writes a plain
HTML table: on every step the browser swaps one element's contents. Profiled per step click
(L = 1024, Br = 128 rows): ``st.html`` spent ~30 ms in its sanitizer (DOMPurify) and
``st.dataframe`` (a canvas grid) ~10 ms plus forced layouts; this writes one innerHTML. The
numbers are text, so they can be selected and copied.
"""
from __future__ import annotations

import numpy as np

from ..trace import Trace
from . import component

KEY = "rows_table"

_CSS = """
.rows-table { max-height: 240px; overflow: auto; border: 1px solid #e5e7eb;
  border-radius: .4rem; }
.rows-table table { border-collapse: collapse; width: 100%; font-size: .72rem;
  font-variant-numeric: tabular-nums; }
.rows-table th { position: sticky; top: 0; background: #f8fafc; font-weight: 600;
  text-align: right; padding: .2rem .3rem; border-bottom: 1px solid #e5e7eb;
  white-space: nowrap; }
.rows-table td { text-align: right; padding: .1rem .3rem; white-space: nowrap; }
.rows-table tr:nth-child(even) td { background: #f8fafc; }
.rows-table td:last-child { white-space: normal; text-align: left; min-width: 4.2em; }
.rows-table th, .rows-table td { padding-left: .2rem; padding-right: .2rem; }
"""

_component = component.boxed(
    "rowtable", "rows-table", css=_CSS,
    prelude="""const esc = (s) => String(s).replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);""",
    update="""const head = data.columns.map((c) => `<th>${esc(c)}</th>`).join("");
  const body = data.rows.map((r) => "<tr>" + r.map((v) => `<td>${esc(v)}</td>`).join("")
    + "</tr>").join("");
  box.innerHTML = `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;""")


FIRST_TILE = "none: first tile"  # the row meets its first visible key: m_old = -inf
COLUMNS = ("row", "m old", "rowmax S", "m new", "alpha", "l old", "rowsum P~", "l new",
           "rescaled")


def table_data(trace: Trace, n: int) -> dict:
    """The component's data for step n: one line per row of its Q block, that row's state
    before and after the step, as text (5 significant digits; ``rescaled`` "yes", empty, or
    ``FIRST_TILE`` where the row meets its first visible key). Text, because JSON has no
    -inf (m before a row's first tile)."""
    s = trace.steps[n]
    i0, i1 = trace.config.rows(s.i)
    rescaled = s.rescaled & np.isfinite(s.m_before)
    numbers = np.stack([s.m_before, s.s_max, s.m, s.alpha, s.l_before, s.p_sum, s.l], 1)
    first = (~np.isfinite(s.m_before) & np.isfinite(s.m)).tolist()
    rows = [[str(r), *(f"{v:.5g}" for v in line.tolist()), "yes" if x else FIRST_TILE if f else ""]
            for r, line, x, f in zip(range(i0, i1), numbers, rescaled.tolist(), first,
                                     strict=True)]
    return {"columns": list(COLUMNS), "rows": rows}


def render(data: dict, key: str = KEY) -> None:
    """The table; ``data`` is ``table_data`` of the current step, made beforehand (or any
    ``{"columns": [...], "rows": [[text, ...], ...]}``: the exactness panel's tiles)."""
    _component(key=key, data=data)
