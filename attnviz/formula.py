"""Formulas written once, rendered twice: as LaTeX (to read, copy and test) and as MathML
(what the page shows).

Why two: the browser lays out MathML natively, while LaTeX on a Streamlit page goes through
KaTeX in JavaScript on every rerun. For the live math panel, which changes on every step,
KaTeX cost each step click ~15-50 ms of browser time (paired A/B in headless Chromium). Each
piece below carries both spellings, so the two can never say different things.

A ``Math`` is a fragment; ``+`` juxtaposes fragments. ``Equation`` is one formula with the
recorded numbers on a second line, aligned at "=".
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape


@dataclass(frozen=True)
class Math:
    """A piece of a formula: its LaTeX and its MathML (presentation markup, no <math>)."""

    tex: str
    mml: str

    def __add__(self, other: Math) -> Math:
        return Math(f"{self.tex} {other.tex}", self.mml + other.mml)


def _row(x: Math) -> str:
    return f"<mrow>{x.mml}</mrow>"


def mi(tex: str, text: str | None = None) -> Math:
    """An identifier: ``tex`` in LaTeX, ``text`` (default ``tex``) in MathML."""
    return Math(tex, f"<mi>{escape(text or tex)}</mi>")


def word(name: str) -> Math:
    """An upright multi-letter name: rowmax, acc, LSE, log."""
    return Math(rf"\mathrm{{{name}}}", f"<mi>{escape(name)}</mi>")


def fn(name: str) -> Math:
    """An operator name: max, log."""
    return Math(rf"\{name}", f"<mi>{name}</mi>")


def mo(tex: str, text: str | None = None) -> Math:
    """An operator or fence."""
    return Math(tex, f"<mo>{escape(text or tex)}</mo>")


def text(s: str) -> Math:
    assert not set(s) & set("\\{}&%$#_^~"), f"text {s!r} needs LaTeX escaping"
    # spaces as no-break spaces: MathML drops a token's leading and trailing spaces
    shown = escape(s).replace(" ", "\u00a0")
    return Math(rf"\text{{{s}}}", f"<mtext>{shown}</mtext>")


def space(em: float = 0.3) -> Math:
    tex = r"\," if em < 0.2 else r"\ " if em < 0.6 else r"\quad"
    return Math(tex, f'<mspace width="{em}em"></mspace>')


def num(x: float) -> Math:
    """A recorded float32 number, 6 significant digits; infinities and powers of ten typeset."""
    x = float(x)
    sign = Math("-", '<mo form="prefix">−</mo>') if x < 0 else None  # unary, not binary
    if math.isinf(x):
        body = Math(r"\infty", "<mi>∞</mi>")
    else:
        s = f"{abs(x):.6g}"
        if "e" in s:
            mant, exp = s.split("e")
            body = Math(rf"{mant} \times 10^{{{int(exp)}}}",
                        f"<mn>{mant}</mn><mo>×</mo><msup><mn>10</mn>"
                        f"<mn>{str(int(exp)).replace('-', '−')}</mn></msup>")
        else:
            body = Math(s, f"<mn>{s}</mn>")
    if sign is None:
        return body
    return Math("-" + body.tex, f"<mrow>{sign.mml}{body.mml}</mrow>")


def num_operand(x: float) -> Math:
    """``num`` as the right operand of a minus sign: a negative number in parentheses."""
    return paren(num(x), big=False) if x < 0 else num(x)


def sub(base: Math, s: Math) -> Math:
    return Math(f"{{{base.tex}}}_{{{s.tex}}}", f"<msub>{_row(base)}{_row(s)}</msub>")


def sup(base: Math, s: Math) -> Math:
    return Math(f"{{{base.tex}}}^{{{s.tex}}}", f"<msup>{_row(base)}{_row(s)}</msup>")


def _fence(c: str) -> str:
    # fixed size: a stretchy fence grows with the tilde over P and dwarfs its contents
    return f'<mo stretchy="false">{c}</mo>'


def paren(x: Math, big: bool = True) -> Math:
    left, right = (r"\big(", r"\big)") if big else ("(", ")")
    return Math(f"{left}{x.tex}{right}", f"{_fence('(')}{_row(x)}{_fence(')')}")


def bracket(x: Math) -> Math:
    return Math(f"[{x.tex}]", f"{_fence('[')}{_row(x)}{_fence(']')}")


def norm(x: Math) -> Math:
    return Math(rf"\lVert {x.tex} \rVert", f"{_fence('‖')}{_row(x)}{_fence('‖')}")


def tilde(x: Math) -> Math:
    return Math(rf"\tilde {x.tex}", f'<mover accent="true">{_row(x)}<mo>~</mo></mover>')


def join(parts: list[Math], sep: Math) -> Math:
    out = parts[0]
    for p in parts[1:]:
        out = out + sep + p
    return out


@dataclass(frozen=True)
class Equation:
    """``lhs = formula``, and below it ``= numbers``: the rule, then this step's values."""

    lhs: Math
    formula: Math
    numbers: Math

    @property
    def tex(self) -> str:
        return (rf"\begin{{aligned}} {self.lhs.tex} &= {self.formula.tex} \\ "
                rf"&= {self.numbers.tex} \end{{aligned}}")

    @property
    def mml(self) -> str:
        """Two rows of a <mtable> (``mathml_block``): left column the lhs, right column from
        "=" on."""
        eq = "<mo>=</mo>"
        lhs, rhs = '<mtd class="lhs" columnalign="right">', '<mtd class="rhs" columnalign="left">'
        return (f"<mtr>{lhs}{_row(self.lhs)}</mtd>{rhs}{eq}{_row(self.formula)}</mtd></mtr>"
                f"<mtr>{lhs}</mtd>{rhs}{eq}{_row(self.numbers)}</mtd></mtr>")


def mathml_block(equations: list[Equation]) -> str:
    """The equations as block <math> elements, one table each: a shared table would line up
    every "=", but its columns take the widest left side and the widest right side of
    different equations, which overflows a half-width column."""
    return "".join(f'<math display="block"><mtable>{eq.mml}</mtable></math>'
                   for eq in equations)
