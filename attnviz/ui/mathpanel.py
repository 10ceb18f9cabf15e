"""The live math box: this step's update formulas for one row, typeset as MathML, with the
notes under them and the same formulas as LaTeX to copy.

A tiny custom component (components v2, inline JavaScript, no bundle): on every step the
browser swaps the box's contents, and lays the MathML out natively. ``st.latex`` renders
through KaTeX in JavaScript, which cost each step click ~15-50 ms of browser time (paired
A/B in headless Chromium). The LaTeX sits in a closed <details> that stays as the reader
left it from step to step.

Long numbers (a bug's 1.07314 × 10¹⁵) can make a formula wider than the box, and MathML does
not wrap: after each update the script shrinks such a formula's font to fit (down to
``MIN_REM``), and the box scrolls sideways beyond that, so no number is ever cut at the edge.
"""
from __future__ import annotations

from ..livemath import RowMath, latex_block
from . import component

KEY = "live_math"
FONT_REM, MIN_REM = 0.95, 0.62  # a formula's font size, and the smallest it shrinks to

_CSS = """
.live-math { border: 1px solid rgba(49, 51, 63, .2); border-radius: .5rem;
  padding: .3rem .6rem .5rem; }
.live-math math { font-family: math; font-size: %(font)grem; margin: .55rem 0 .55rem .2rem;
  width: fit-content; }
.live-math mtd { padding: .1em 0; }
.live-math .formulas { overflow-x: auto; overflow-y: hidden; }
/* Chromium aligns table cells of MathML only by its -webkit- keywords */
.live-math mtd.lhs { text-align: right; text-align: -webkit-right; }
.live-math mtd.rhs { text-align: left; text-align: -webkit-left; padding-left: .28em; }
.live-math .notes { font-size: .8rem; color: rgba(49, 51, 63, .6); margin: .3rem 0 0; }
.live-math .notes:empty { display: none; }
.live-math details { font-size: .75rem; margin-top: .4rem; }
.live-math summary { cursor: pointer; color: rgba(49, 51, 63, .6); }
.live-math pre { white-space: pre-wrap; word-break: break-all; font-size: .72rem;
  background: #f8fafc; padding: .4rem; border-radius: .3rem; margin: .3rem 0 0; }
""" % {"font": FONT_REM}

# after the swap: a formula wider than the box gets a smaller font, in proportion (one
# layout read per formula: a few per step)
# (a hidden box, width 0, is left alone)
_FIT = """const room = box.querySelector(".formulas").clientWidth - 6;
  for (const m of room > 0 ? box.querySelectorAll(".formulas math") : []) {
    const need = m.getBoundingClientRect().width;
    if (need > room)
      m.style.fontSize = Math.max(%(min)g, 0.97 * %(font)g * room / need) + "rem";
  }""" % {"min": MIN_REM, "font": FONT_REM}

_component = component.boxed(
    "livemath", "live-math", css=_CSS,
    html='<div class="formulas"></div><p class="notes"></p>'
         "<details><summary>LaTeX</summary><pre></pre></details>",
    update="""box.querySelector(".formulas").innerHTML = data.mathml;
  box.querySelector(".notes").textContent = data.notes;
  box.querySelector("pre").textContent = data.latex;
  """ + _FIT)


def box_data(rm: RowMath, notes: str) -> dict:  # or anything with .mathml() and .latex()
    """The component's data: the formulas as MathML and as LaTeX, and the notes (text)."""
    return {"mathml": rm.mathml(), "latex": latex_block(rm.latex()), "notes": notes}


def render(rm: RowMath, notes: str, key: str = KEY) -> None:
    """The box for ``rm`` (the backward tab passes its ``TileMath`` and its own key)."""
    _component(key=key, data=box_data(rm, notes))


def render_box(key: str, mathml: str, latex: str, notes: str = "") -> None:
    """The same box for other formulas (the exactness panel's identity)."""
    _component(key=key, data={"mathml": mathml, "latex": latex, "notes": notes})
