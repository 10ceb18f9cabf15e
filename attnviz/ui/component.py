"""The page's small custom components (Streamlit components v2, inline JavaScript, no
bundle), built one way: each element keeps one ``<div class="...">`` that its script builds
once and then only updates on every rerun.

Why components at all: the step view redraws on every step click, and the browser's cost of
a step is mostly React re-rendering Streamlit's elements. A component that swaps an image's
``src`` or one ``innerHTML`` is the cheapest element there is (each use says what it
replaced and what that cost).
"""
from __future__ import annotations

import json

import streamlit as st

_JS = """
%(prelude)s
export default function ({ data, parentElement, setTriggerValue }) {
  let box = parentElement.querySelector("div.%(cls)s");
  if (!box) {
    box = document.createElement("div");
    box.className = "%(cls)s";
    box.innerHTML = %(html)s;
    parentElement.appendChild(box);
    %(setup)s
  }
  %(update)s
}
"""


def boxed(name: str, cls: str, *, update: str, html: str = "", setup: str = "",
          prelude: str = "", css: str = ""):
    """A component named ``attnviz_<name>`` whose script, with ``data``, ``box``,
    ``parentElement`` and ``setTriggerValue`` in scope, runs ``setup`` once after filling a
    new ``div.<cls>`` with ``html``, and ``update`` on every rerun. ``prelude`` is module-level
    code (helpers); ``css`` applies to the page (``cls`` scopes it)."""
    js = _JS % {"prelude": prelude, "cls": cls, "html": json.dumps(html), "setup": setup,
                "update": update}
    return st.components.v2.component(f"attnviz_{name}", js=js, css=css or None,
                                      isolate_styles=False)
