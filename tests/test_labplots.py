"""The labs' charts carry the labs' numbers: read the traces back."""
from __future__ import annotations

import numpy as np

from attnviz import labplots, numerics, splitkv


def test_merge_weights_chart_has_one_bar_group_per_head_with_the_weights():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((3, 8), (90, 8), (90, 8)))
    states = splitkv.partials(q, k, v, bounds=[0, 30, 60, 90])
    _, lse = splitkv.merge(states, [0, 1, 2])
    w = splitkv.merge_weights(states, lse.astype(np.float64))
    fig = labplots.merge_weights_chart(w, [s.keys[0] for s in states])
    assert [t.name for t in fig.data] == ["head 0", "head 1", "head 2"]
    for h, t in enumerate(fig.data):
        np.testing.assert_array_equal(t.y, w[:, h])
        assert list(t.x) == ["c0", "c1", "c2"]
        assert list(t.customdata) == ["keys [0, 30)", "keys [30, 60)", "keys [60, 90)"]


def test_error_sweep_chart_marks_nan_points_of_the_standard_method():
    e = numerics.ErrorSweep("float16", np.array([1.0, 2.0]), np.array([1e-3, 1e-3]),
                            np.array([1e-6, 2e-6]), np.array([2e-3, np.nan]),
                            np.array([5e-4, 5e-4]), np.array([0, 7]))
    fig = labplots.error_sweep_chart(e)
    nan = next(t for t in fig.data if t.name == "standard: NaN/Inf")
    assert list(nan.x) == [2.0]
    std = next(t for t in fig.data if t.name.startswith("standard, "))
    assert std.y[0] == 2e-3 and np.isnan(std.y[1])


def test_overflow_chart_puts_nan_marks_where_the_naive_softmax_failed():
    o = numerics.overflow(xs=np.arange(0.0, 100.0, 1.0))
    fig = labplots.overflow_chart(o)
    for name in ("float32", "float16", "bfloat16"):
        marks = next(t for t in fig.data if t.name == f"{name}: NaN")
        assert marks.x[0] == o.first_bad[name] and len(marks.x) == np.isnan(o.naive[name]).sum()
    # the ln(max) labels sit above every plotted point, inside the axis, not on the data
    top = max(np.nanmax(np.asarray(t.y, float)) for t in fig.data if len(t.y))
    lo, hi = fig.layout.yaxis.range
    labels = {a.text: a for a in fig.layout.annotations}
    assert set(labels) == {f"ln(max fp16) = {o.limit['float16']:.2f}",
                           f"ln(max fp32, bf16) = {max(o.limit['float32'], o.limit['bfloat16']):.2f}"}
    for a in labels.values():  # on a log axis Plotly reads an annotation's y as log10
        assert np.log10(top) < a.y < hi and a.yref in (None, "y")
    fp16, fp32 = (labels[t] for t in sorted(labels))  # "ln(max fp16..." < "ln(max fp32..."
    assert (fp16.xanchor, fp32.xanchor) == ("left", "right") and fp16.x < fp32.x
    assert abs(fp16.y - fp32.y) >= 0.9  # a row each: they would overlap on a narrow chart


def test_masked_rows_chart_writes_nan_in_the_empty_rows_only():
    mr = numerics.masked_rows()
    fig = labplots.masked_rows_chart(mr)
    raw, guarded = fig.data[0], fig.data[2]
    assert [row.count("NaN") for row in raw.text] == [0, 6, 0, 6]
    assert all("NaN" not in row for row in guarded.text)
