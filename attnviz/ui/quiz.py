"""Predict, then reveal: a toggle; one question about the next step (``attnviz.quiz``), a
radio to answer, a Reveal button, right or wrong with the reason, and a score kept in the
session. Keyboard: Tab reaches the radio (arrow keys choose) and the button (Enter)."""
from __future__ import annotations

import zlib

import streamlit as st

from ..quiz import Question, question
from .cache import TracedHead

TOGGLE, SCORE, DONE, REVEAL = "quiz_on", "quiz_score", "quiz_done", "quiz_reveal"


def _ident(head: TracedHead, q: Question) -> str:
    """The question's identity in this session: the trace, the step and the prompt."""
    trace, prompt = zlib.crc32(repr(head.key).encode()), zlib.crc32(q.prompt.encode())
    return f"{trace:08x}-{q.n}-{q.kind}-{prompt:08x}"


def choice_key(ident: str) -> str:
    return f"quiz_choice_{ident}"


def _reveal(ident: str, q: Question) -> None:
    ss = st.session_state
    choice = ss.get(choice_key(ident))
    done = ss.setdefault(DONE, {})
    if ident in done or choice is None:
        return
    right = q.check(choice)
    done[ident] = (choice, right)
    score = ss.setdefault(SCORE, {"right": 0, "asked": 0})
    score["asked"] += 1
    score["right"] += int(right)


def render(head: TracedHead, n: int, offset: int) -> None:
    if not st.toggle("Predict, then reveal: a question about the next step", key=TOGGLE):
        return
    ss = st.session_state
    q = question(head.trace, n, offset)
    ident = _ident(head, q)
    got = ss.get(DONE, {}).get(ident)
    score = ss.get(SCORE, {"right": 0, "asked": 0})
    with st.container(border=True, key="quiz_box"):
        st.markdown(f"**Predict:** {q.prompt}  \n:small[:gray[Score: {score['right']} right "
                    f"of {score['asked']}. Answer, reveal, then step on.]]")
        choice = st.radio("Your prediction", q.options, index=None, key=choice_key(ident),
                          horizontal=True, disabled=got is not None)
        if got is None:
            st.button("Reveal", key=REVEAL, on_click=_reveal, args=(ident, q),
                      disabled=choice is None, icon=":material/visibility:")
        elif got[1]:
            st.success(f"Right: {q.answer}. {q.reason}", icon=":material/check:")
        else:
            st.error(f"Not quite: you said {got[0]}, the answer is {q.answer}. {q.reason}",
                     icon=":material/close:")
