"""The two spellings of a formula (attnviz.formula): LaTeX and MathML say the same thing."""
from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from attnviz import run_trace
from attnviz.formula import num, num_operand
from attnviz.livemath import row_math
from attnviz.scenarios import one_head


def _mml_text(x) -> str:
    """The text a reader sees in a MathML fragment, with its minus signs as ASCII."""
    root = ET.fromstring(f'<math xmlns="http://www.w3.org/1998/Math/MathML">{x.mml}</math>')
    return "".join(root.itertext()).replace("−", "-")


@pytest.mark.parametrize("x, tex, seen", [
    (1.5, "1.5", "1.5"),
    (-2.25, "-2.25", "-2.25"),
    (-math.inf, r"-\infty", "-∞"),
    (math.inf, r"\infty", "∞"),
    (1.2345678e-9, r"1.23457 \times 10^{-9}", "1.23457×10-9"),
    (-3.0e12, r"-3 \times 10^{12}", "-3×1012"),
    (0.0, "0", "0"),
])
def test_numbers_in_both_spellings(x, tex, seen):
    assert num(x).tex == tex
    assert _mml_text(num(x)) == seen


def test_a_negative_operand_is_parenthesized():
    assert num_operand(-1.5).tex == "(-1.5)" and _mml_text(num_operand(-1.5)) == "(-1.5)"
    assert num_operand(1.5).tex == "1.5"


@pytest.mark.parametrize("finished", [False, True])
def test_every_equation_is_well_formed_mathml_with_the_latex_numbers(finished):
    q, k, v = one_head("late_spike", 70, 70, 8, seed=3)  # ragged: the last block has 6 rows
    trace = run_trace(q, k, v, q_block=16, kv_block=16, causal=True)
    r = trace.config.Lq - 1
    steps = [s.n for s in trace.steps if s.i == trace.config.Tr - 1]
    n = steps[-1] if finished else steps[len(steps) // 2]
    rm = row_math(trace, n, r)
    assert rm.finished == finished
    root = ET.fromstring(f"<div>{rm.mathml()}</div>")  # well-formed; in HTML, <math> is
    blocks = root.findall("math")  # MathML by its name
    assert len(blocks) == len(rm.equations()) == len(list(root))
    assert all(b.get("display") == "block" and len(b.findall("mtable/mtr")) == 2 for b in blocks)
    number = re.compile(r"\d+(?:\.\d+)?")
    for eq in rm.equations():  # the same numbers (indices, values, exponents) in the same order
        seen = "".join(ET.fromstring(f"<mtable>{eq.mml}</mtable>").itertext())
        assert number.findall(eq.tex) == number.findall(seen), eq.tex
    text = "".join(rm.latex())
    for x in (rm.m, rm.l, rm.alpha, rm.p_sum):
        assert num(x).tex in text
    assert np.isfinite(rm.l)
