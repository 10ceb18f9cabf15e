"""Stepping: first / previous / next / last, a step slider, play/pause, and the play speed.

Keyboard: Home / Left / Right / End step, P plays or pauses (Streamlit shows the keys on the
buttons).

The cursor is ``st.session_state["step"]`` (0-based visit order). Buttons and the slider move
it in callbacks (before anything is drawn); auto-play is the step view fragment rerunning every
``interval()`` seconds and calling ``tick`` first. Any manual move pauses auto-play. Play and
pause rerun the whole app once, because a fragment's ``run_every`` is fixed when it is
defined. Nothing here recomputes the trace: it only moves an index into it.
"""
from __future__ import annotations

from functools import partial

import streamlit as st

from ..trace import Trace
from ..viewconfig import ViewConfig
from . import component, state

SLIDER = "step_slider"

# The step slider: a native range input in a tiny custom component (components v2, inline
# JavaScript). ``st.slider`` measured its layout on every step (a forced layout, ~20-40 ms
# of each step click in Chromium); this one only sets its value. Dragging shows the step
# under the thumb and sends it on release (trigger ``step``); arrow keys move it when it has
# focus, without also firing the page's Left/Right step shortcuts.
_SLIDER_CSS = """
.step-slider { display: flex; flex-direction: column; gap: .15rem; padding: .1rem 0 .3rem; }
.step-slider label { font-size: .875rem; color: rgb(49, 51, 63); }
.step-slider output { color: #ff4b4b; font-variant-numeric: tabular-nums; margin-left: .4rem; }
.step-slider input { -webkit-appearance: none; appearance: none; width: 100%; height: 1rem;
  margin: 0; background: transparent; cursor: pointer; }
.step-slider input::-webkit-slider-runnable-track { height: 4px; border-radius: 2px;
  background: linear-gradient(to right, #ff4b4b var(--fill), #e6e9ef var(--fill)); }
.step-slider input::-webkit-slider-thumb { -webkit-appearance: none; width: 14px;
  height: 14px; margin-top: -5px; border-radius: 50%; background: #ff4b4b; border: 0; }
.step-slider input::-moz-range-track { height: 4px; border-radius: 2px; background: #e6e9ef; }
.step-slider input::-moz-range-progress { height: 4px; border-radius: 2px;
  background: #ff4b4b; }
.step-slider input::-moz-range-thumb { width: 14px; height: 14px; border-radius: 50%;
  background: #ff4b4b; border: 0; }
.step-slider input:focus-visible { outline: 2px solid rgba(255, 75, 75, .5);
  outline-offset: 2px; border-radius: 2px; }
"""
_slider = component.boxed(
    "stepslider", "step-slider", css=_SLIDER_CSS,
    prelude="""const fill = (input) => input.style.setProperty("--fill",
  `${100 * input.value / Math.max(1, input.max)}%`);""",
    html='<label><span></span><output></output></label><input type="range" min="0" step="1">',
    setup="""const input = box.querySelector("input"), out = box.querySelector("output");
    input.addEventListener("input", () => { out.textContent = input.value; fill(input); });
    input.addEventListener("change", () => box.send("step", Number(input.value)));
    input.addEventListener("keydown", (e) => e.stopPropagation());""",
    update="""box.send = setTriggerValue;  // this render's, not the first one's
  const input = box.querySelector("input");
  box.querySelector("span").textContent = data.label;
  input.max = data.last;
  input.value = data.value;
  fill(input);
  input.setAttribute("aria-label", data.label);
  box.querySelector("output").textContent = data.value;""")


def interval() -> float | None:
    """Seconds between auto-play ticks, or None when paused."""
    if not st.session_state.get(state.PLAYING):
        return None
    return 1.0 / st.session_state.get(state.SPEED, 1.0)


def _go(to: int | None = None, by: int = 0, last: int = 0) -> None:
    cur = st.session_state.get(state.STEP, 0)
    st.session_state[state.STEP] = min(max((cur + by) if to is None else to, 0), last)
    state.navigated()


def _on_slide(last: int) -> None:
    value = (st.session_state.get(SLIDER) or {}).get("step")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _go(to=int(value), last=last)


def _toggle_play(last: int) -> None:
    playing = not st.session_state.get(state.PLAYING, False)
    if playing and st.session_state.get(state.STEP, 0) >= last:
        st.session_state[state.STEP] = 0  # play again from the start
    st.session_state[state.PLAYING] = playing


def tick(trace: Trace, defined_interval: float | None) -> None:
    """Advance the cursor one step if this is an auto-play run; stop at the last step.
    Reruns the app when play/pause or the speed changed since the fragment was defined
    with ``defined_interval``."""
    last = len(trace.steps) - 1
    navigated = state.take_navigated()
    if interval() != defined_interval:
        st.rerun()  # redefine the fragment with the new run_every
    if defined_interval is not None and not navigated:
        n = st.session_state.get(state.STEP, 0)
        if n >= last:
            st.session_state[state.PLAYING] = False
            st.rerun()
        st.session_state[state.STEP] = n + 1


def clamp_cursor(trace: Trace, cfg: ViewConfig) -> None:
    """Step within [0, steps - 1] and row within its Q block. A URL (or a configuration with
    fewer steps than the last) may exceed them: that gets a notice."""
    ss = st.session_state
    last = len(trace.steps) - 1
    n = int(ss.get(state.STEP, 0))
    ss[state.STEP] = min(max(n, 0), last)
    if ss[state.STEP] != n:
        state.add_notice(cfg, f"step={n} is outside [0, {last}] for this configuration; "
                              f"using {ss[state.STEP]}.")
    if state.take_url_cursor():
        i0, i1 = trace.config.rows(trace.steps[ss[state.STEP]].i)
        row = int(ss.get(state.ROW, 0))
        if not 0 <= row < i1 - i0:
            ss[state.ROW] = min(max(row, 0), i1 - i0 - 1)
            state.add_notice(cfg, f"row={row} is outside the rows of the step's Q block "
                                  f"[0, {i1 - i0 - 1}]; using {ss[state.ROW]}.")


def render(trace: Trace) -> int:
    """The controls; returns the current step n."""
    last = len(trace.steps) - 1
    n = st.session_state[state.STEP]
    playing = bool(st.session_state.get(state.PLAYING))
    row = st.container(horizontal=True, vertical_alignment="bottom")  # one block, not six
    moves = (  # key, label, icon, move, shortcut, disabled
        ("first", "First", "first_page", {"to": 0}, "Home", n == 0),
        ("prev", "Prev", "chevron_left", {"by": -1}, "Left", n == 0),
        ("next", "Next", "chevron_right", {"by": 1}, "Right", n == last),
        ("last", "Last", "last_page", {"to": last}, "End", n == last),
    )
    for key, label, icon, move, shortcut, disabled in moves:
        row.button(label, key=key, icon=f":material/{icon}:", on_click=_go,
                   kwargs={**move, "last": last}, shortcut=shortcut, disabled=disabled,
                   width="stretch")
    row.button("Pause" if playing else "Play", key="play", type="primary",
               icon=":material/pause:" if playing else ":material/play_arrow:",
               on_click=_toggle_play, args=(last,), shortcut="P", width="stretch",
               disabled=last == 0)
    if last > 0:
        _slider(key=SLIDER, data={"label": "Step (visit order)", "value": n, "last": last},
                on_step_change=partial(_on_slide, last))
    else:
        st.caption("This configuration computes a single tile.")
    return st.session_state[state.STEP]


def render_speed() -> None:
    """The auto-play speed, in the sidebar: outside the step view, so a step does not redraw
    it (a slider cost each step click ~8 ms on the server and a layout in the browser), and
    changing it reruns the whole app, which redefines the fragment's ``run_every``."""
    st.session_state.setdefault(state.SPEED, 1.0)
    st.sidebar.subheader("Playback")
    st.sidebar.select_slider("Auto-play speed (steps/s)", state.SPEEDS, key=state.SPEED,
                             help="How fast Play (shortcut P) walks the steps.")
