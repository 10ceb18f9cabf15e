"""A panel's heading, its explanation and its summary lines as one markdown element.

Every element of the step view is sent and re-rendered by the browser on each step click,
so the heading (h4), the small grey "what you are seeing" text and any summary lines of a
panel travel together instead of as three elements.
"""
from __future__ import annotations

import streamlit as st


def aside(text: str) -> str:
    """``text`` as small grey markdown (what ``st.caption`` shows, inside one element)."""
    return f":small[:gray[{text}]]"


def heading(title: str, about: str = "", *lines: str) -> None:
    """``#### title``, then ``about`` in small grey type, then ``lines`` as paragraphs."""
    parts = [f"#### {title}", *([aside(about)] if about else []), *lines]
    st.markdown("\n\n".join(parts))
