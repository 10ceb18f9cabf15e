"""The Memory tab's chart as an image: bytes of each method over L, drawn with
``attnviz.raster`` like the step view's figures (``attnviz.images``).

Log-log axes: the methods' modelled bytes as lines (``attnviz.memory``), this machine's RAM
as a dashed line, the current L as a dotted one, and the timing panel's measured peaks as
crosses. A measured peak of 0 B (served from memory the process already held: RSS cannot
resolve it) has no place on a log axis, so the legend names it instead, as below RSS's floor.
"""
from __future__ import annotations

import math

from .images import COLORWAY, CURRENT_COLOR, Figure
from .plots import RSS_FLOOR, bytes_label, length_label, measured_bytes_label
from .raster import Axis, Canvas, Plot, legend


def memory_chart(Ls: list[int], series: dict[str, list[int]], *, ram: int, current_L: int,
                 measured: dict[str, tuple[int, int]] | None = None,
                 x_title: str = "sequence length L") -> Figure:
    """Bytes of each method over L (log-log), this machine's RAM as a dashed line, the current
    L as a dotted line; ``measured``: name -> (L, peak extra bytes) as crosses."""
    shown = {name: ys for name, ys in series.items() if any(ys)}  # no GQA copy if Hq == Hkv
    measured = measured or {}
    # a peak of 0 B (served from memory the process already held) has no place on a log axis:
    # it is named in the legend instead of stretching the axis down to 1 B
    on_axis = {name: (L, b) for name, (L, b) in measured.items() if b > 0}
    lo = min(*(min(y for y in ys if y > 0) for ys in shown.values()),
             *(b for _, b in on_axis.values()))
    hi = max(max(max(ys) for ys in shown.values()), ram, *(b for _, b in on_axis.values()))
    exps = list(range(int(math.log2(lo)) // 10 * 10, int(math.log2(hi)) + 10, 10))
    W = 500
    cv = Canvas(W, 10)
    colors = {name: COLORWAY[k % len(COLORWAY)] for k, name in enumerate(shown)}
    entries = [(name, "o", colors[name]) for name in shown]
    entries += [(f"measured: {name}" if name in on_axis
                 else f"measured: {name} < {bytes_label(RSS_FLOOR)}",
                 "x", "#111827") for name in measured]
    entries += [(f"this machine's RAM ({bytes_label(ram)})", "--", CURRENT_COLOR),
                (f"current L = {current_L}", "--", "#64748b")]
    top = 10 + legend(cv, 10, 6, entries, W - 20, draw=False) + 8
    H = int(top + 300 + 52)
    y_labels = [bytes_label(2**k) for k in exps]
    # the box starts right of the widest tick label and the axis title: nothing is cut off
    left = int(math.ceil(14 + 14 + max(cv.text_width(s, 11) for s in y_labels) + 10))
    cv = Canvas(W, H)
    legend(cv, 10, 6, entries, W - 20)
    box = (max(76, left), top, W - 16, top + 300)
    p = Plot(cv, box, Axis(Ls[0] / 1.25, Ls[-1] * 1.25, log=True),
             Axis(2.0 ** exps[0], 2.0 ** exps[-1], log=True))
    ticks = [L for L in Ls if L == Ls[0] or L == Ls[-1] or (L.bit_length() - 1) % 2 == 1]
    p.frame(grid_x=ticks, grid_y=[2.0**k for k in exps])
    p.hline(ram, CURRENT_COLOR)
    p.vline(current_L, "#64748b", 2, dash=(2, 3))
    for name, ys in shown.items():
        pos = [(L, y) for L, y in zip(Ls, ys, strict=True) if y > 0]
        p.line([L for L, _ in pos], [y for _, y in pos], colors[name], 2.5)
        p.markers([L for L, _ in pos], [y for _, y in pos], "o", 7, colors[name])
    for L, b in on_axis.values():
        p.markers([L], [b], "x", 12, "#111827")
    p.xticks(ticks, [length_label(L) for L in ticks], title=x_title)
    p.yticks([2.0**k for k in exps], y_labels)
    cv.text((14, (box[1] + box[3]) / 2), "bytes", angle=90, size=12)
    alt = f"bytes over {x_title} for {', '.join(shown)}; current L = {current_L}" + "".join(
        f"; measured: {name} at L = {L}, {measured_bytes_label(b)}"
        for name, (L, b) in measured.items())
    return Figure(cv, {"bytes": p}, alt, {"series": list(shown), "measured": dict(measured)})
