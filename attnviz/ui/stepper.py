"""Stepping: first / previous / next / last, a step slider, play/pause, and the play speed.

Keyboard: Home / Left / Right / End step, P plays or pauses (Streamlit shows the keys on the
buttons).

The cursor is ``st.session_state["step"]`` (0-based visit order). Buttons and the slider move
it in callbacks (before anything is drawn). Any manual move pauses auto-play. Nothing here
recomputes the trace: it only moves an index into it.

Auto-play is driven by the page, not by a server timer. The slider component, once it has
drawn step n while playing, waits ``interval()`` and sends ``tick = n``: "the page shows n,
show the next". The server advances only if the cursor is still n (``_on_tick``), so a tick
can never run ahead of what the page shows, and a late or repeated tick is a no-op.

Why: a server-side ``run_every`` fragment advanced the cursor on every rerun, whatever the
page showed. On a loaded machine (long prefill, 4 steps/s, 2 cores shared) the page fell
behind the server; a Pause click then took 40+ s to land while steps kept coming, and a
Next counted from the server's cursor, far from the step on screen (31 -> 516 once). Every
control here is therefore also idempotent: the buttons carry absolute targets (Next drawn
at step n goes to n + 1, twice or not), Play and Pause set the state rather than toggling it.
"""
from __future__ import annotations

from functools import partial

import streamlit as st

from ..trace import Trace
from ..viewconfig import ViewConfig
from . import component, state

SLIDER = "step_slider"
_SLIDER_SEQ = "_step_slider_seq"  # the last slider send handled (its sequence number)

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
# Every key press must count. A press sends the thumb's value (absolute, so coalesced sends
# lose nothing) with a sequence number; the server echoes the last number it handled
# (``data.seq``). A render that has not seen the latest send yet (a run that started before
# the press) must not move the thumb back: it did, and the next press then counted from the
# old value (34 ArrowRight presses landed on step 31). A send the server never answers is
# given up after 3 s, and the server's value wins again.
_slider = component.boxed(
    "stepslider", "step-slider", css=_SLIDER_CSS,
    prelude="""const fill = (input) => input.style.setProperty("--fill",
  `${100 * input.value / Math.max(1, input.max)}%`);
const shown = (input) => `${Number(input.value) + 1} of ${Number(input.max) + 1}`;""",
    html='<label><span></span><output></output></label><input type="range" min="0" step="1">',
    setup="""const input = box.querySelector("input"), out = box.querySelector("output");
    box.seq = 0;
    input.addEventListener("input", () => { out.textContent = shown(input); fill(input); });
    input.addEventListener("change", () => {
      box.seq = Math.max(Date.now(), box.seq + 1);  // above any earlier page's numbers
      box.sentAt = performance.now();
      box.send("step", [Number(input.value), box.seq]);
    });
    input.addEventListener("keydown", (e) => e.stopPropagation());""",
    update="""box.send = setTriggerValue;  // this render's, not the first one's
  const input = box.querySelector("input");
  box.querySelector("span").textContent = data.label;
  const waiting = data.seq < box.seq && performance.now() - box.sentAt < 3000;
  input.max = data.last;
  if (!waiting) input.value = data.value;
  input.dataset.server = data.value;
  fill(input);
  input.setAttribute("aria-label", data.label);
  box.querySelector("output").textContent = shown(input);
  // auto-play: this render is on screen; ask for the next step after the interval
  clearTimeout(box.timer);
  if (data.playing) box.timer = setTimeout(() => box.send("tick", data.value), data.wait_ms);""")


def interval() -> float | None:
    """Seconds between auto-play ticks, or None when paused."""
    if not st.session_state.get(state.PLAYING):
        return None
    return 1.0 / st.session_state.get(state.SPEED, 1.0)


def _go(to: int, last: int) -> None:
    st.session_state[state.STEP] = min(max(to, 0), last)
    state.navigated()


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _on_slide(last: int) -> None:
    """The slider sends ``[step, seq]`` (a bare step is taken too); the last seq handled
    goes back to it with the next render."""
    value = (st.session_state.get(SLIDER) or {}).get("step")
    if isinstance(value, list) and len(value) == 2 and all(_number(x) for x in value):
        value, st.session_state[_SLIDER_SEQ] = value[0], value[1]
    if _number(value):
        _go(int(value), last)


def _on_tick(last: int) -> None:
    """An auto-play tick from a page showing step ``shown``: advance to shown + 1 if the
    cursor is still there and we are playing; stop at the last step. Anything else (a tick
    sent before a pause or a manual move reached the server) changes nothing."""
    ss = st.session_state
    shown = (ss.get(SLIDER) or {}).get("tick")
    n = ss.get(state.STEP, 0)
    if not ss.get(state.PLAYING) or not _number(shown) or int(shown) != n:
        return
    if n >= last:
        ss[state.PLAYING] = False
    else:
        ss[state.STEP] = n + 1


def _set_playing(on: bool, last: int) -> None:
    if on and st.session_state.get(state.STEP, 0) >= last:
        st.session_state[state.STEP] = 0  # play again from the start
    st.session_state[state.PLAYING] = on


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
    if last == 0:  # nothing to play, and no slider to send ticks
        st.session_state[state.PLAYING] = False
    playing = bool(st.session_state.get(state.PLAYING))
    row = st.container(horizontal=True, vertical_alignment="bottom")  # one block, not six
    moves = (  # key, label, icon, target, shortcut, disabled
        ("first", "First", "first_page", 0, "Home", n == 0),
        ("prev", "Prev", "chevron_left", n - 1, "Left", n == 0),
        ("next", "Next", "chevron_right", n + 1, "Right", n == last),
        ("last", "Last", "last_page", last, "End", n == last),
    )
    for key, label, icon, target, shortcut, disabled in moves:
        row.button(label, key=key, icon=f":material/{icon}:", on_click=_go,
                   args=(target, last), shortcut=shortcut, disabled=disabled,
                   width="stretch")
    row.button("Pause" if playing else "Play", key="play", type="primary",
               icon=":material/pause:" if playing else ":material/play_arrow:",
               on_click=_set_playing, args=(not playing, last), shortcut="P",
               width="stretch", disabled=last == 0)
    if last > 0:
        wait = interval()
        _slider(key=SLIDER, data={"label": "Step (visit order)", "value": n, "last": last,
                                  "seq": st.session_state.get(_SLIDER_SEQ, 0),
                                  "playing": wait is not None,
                                  "wait_ms": round(1000 * (wait or 0))},
                on_step_change=partial(_on_slide, last), on_tick_change=partial(_on_tick, last))
    else:
        st.caption("This configuration computes a single tile.")
    return st.session_state[state.STEP]


def render_speed() -> None:
    """The auto-play speed, in the sidebar: outside the step view, so a step does not redraw
    it (a slider cost each step click ~8 ms on the server and a layout in the browser); the
    slider component takes the new interval with the rerun a change causes."""
    st.session_state.setdefault(state.SPEED, 1.0)
    st.sidebar.subheader("Playback")
    st.sidebar.select_slider("Auto-play speed (steps/s)", state.SPEEDS, key=state.SPEED,
                             help="How fast Play (shortcut P) walks the steps.")
