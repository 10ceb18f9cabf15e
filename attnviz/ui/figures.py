"""The step view's images (and the rows table's text), all made before any element of the
step view is sent.

Why first: Streamlit sends each element as soon as it is drawn, and the browser re-renders
the step view for each batch that arrives. With the ~50 ms of figure drawing between
elements, one step reached the browser in several batches and cost several re-renders;
drawn up front, the elements leave together and the browser renders the new step once.

The figures are a pure function of the trace and (step, row, all rows), so they are kept
per server (``cache.caches().figures``, bounded by bytes): a class walking the same preset
draws each step once. The output figure changes only when a Q block finishes, so it is kept
under the number of finished rows and reused, with a new text alternative, for the steps
between.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from .. import images
from ..stats import output_error
from . import rowtable, tilemap
from .cache import TracedHead, caches


@dataclass(frozen=True)
class Shown:
    """A figure ready for ``st.image``: PNG data URL, display width (px), text alternative."""
    url: str
    width: int
    alt: str

    @classmethod
    def of(cls, fig: images.Figure) -> Shown:
        return cls(fig.data_url(), fig.width, fig.alt)


@dataclass(frozen=True)
class StepFigures:
    tile_map: dict  # the tile map component's data (``tilemap.component_data``)
    tiles: Shown  # S and P~
    row: Shown  # one row's m and l history
    output: Shown  # finished output rows and their errors
    rows: dict  # the rows table component's data (``rowtable.table_data``)
    errors: tuple  # ``stats.output_error`` at this step: (done, err_O, err_LSE)


def build(head: TracedHead, n: int, r: int, all_rows: bool) -> StepFigures:
    """Every image of step n (row r's history), from the server's cache or drawn now."""
    return caches().figures.get(("step", head.key, n, r, all_rows),
                                lambda: _draw(head, n, r, all_rows))


def _draw(head: TracedHead, n: int, r: int, all_rows: bool) -> StepFigures:
    trace = head.trace
    errors = output_error(trace, head.O_ref, head.lse_ref, n)
    done, err_o, _ = errors
    rows_done = int(done.sum())
    drawn = caches().figures.get(("output", head.key, rows_done),
                                 lambda: Shown.of(images.output_rows(trace, n, done, err_o)))
    output = Shown(drawn.url, drawn.width, images.output_rows_alt(n, rows_done, trace.config.Lq))
    return StepFigures(
        tile_map=tilemap.component_data(trace, n),
        tiles=Shown.of(images.step_tiles(trace, n)),
        row=Shown.of(images.row_history(trace, n, r, all_rows=all_rows)),
        output=output,
        rows=rowtable.table_data(trace, n),
        errors=errors)


def show(fig: Shown, key: str) -> None:
    """An image at most its display width (it is drawn at twice that, for HiDPI screens), in
    a container keyed ``key`` so that tests and the browser find it."""
    with st.container(key=key):
        st.image(fig.url, width=fig.width, alt=fig.alt)
