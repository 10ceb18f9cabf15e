"""Session state and the URL: one place that decides what the current view is.

Widget keys are the ``ViewConfig`` field names (``"L"``, ``"Br"``, ...) plus the view keys
below. Each full run starts with ``sync_config``: on a session's first run it reads the URL
(``st.query_params``); on every run it clamps the raw values (``viewconfig.clamp``) and
writes them back *before* any widget is drawn. Writing them back also keeps the values of
widgets the current mode hides (Streamlit would otherwise forget them).
Notices about clamped values stay visible until the configuration changes again.
"""
from __future__ import annotations

import streamlit as st

from ..presets import PRESETS
from ..viewconfig import DEFAULT, FIELDS, ViewConfig, clamp, from_query, to_query

# view keys (not part of the configuration): the step cursor and what the step panel shows
STEP, ROW, PLAYING, SPEED, ALL_ROWS = "step", "row", "playing", "speed", "all_rows"
PANEL = "panel"  # the open tab below the step view: "Memory", "Timing", a lab
SPEEDS = (0.5, 1.0, 2.0, 4.0)  # steps per second when playing
_NOTICES, _NOTICES_FOR, _INIT = "_notices", "_notices_for", "_init"
_URL_CURSOR = "_url_cursor"


def _int_param(params, name: str, notices: list[str]) -> int | None:
    if name not in params:
        return None
    try:
        return int(params[name])
    except ValueError:
        notices.append(f"{name}={params[name]!r} is not an integer; ignored.")
        return None


def sync_config() -> ViewConfig:
    """The clamped configuration of this run (see the module docstring)."""
    ss = st.session_state
    notices: list[str] = []
    url_fields = None
    if _INIT not in ss:
        url = from_query(st.query_params.to_dict())
        raw, url_fields = {**_as_dict(DEFAULT), **url}, set(url)
        for name in (STEP, ROW):
            value = _int_param(st.query_params, name, notices)
            if value is not None:
                ss[name] = value
                ss[_URL_CURSOR] = True
        ss[_INIT] = True
    else:
        raw = {k: ss.get(k, getattr(DEFAULT, k)) for k in FIELDS}
    cfg, clamped = clamp(raw)
    if url_fields is not None:  # on a URL's first load: only about values it named (a
        # default adjusted to fit, e.g. Bc raised for a long cache, is no one's mistake)
        clamped = [n for n in clamped if n.split("=", 1)[0] in url_fields]
    notices += clamped
    for k, v in _as_dict(cfg).items():
        ss[k] = v
    if notices:
        ss[_NOTICES], ss[_NOTICES_FOR] = notices, cfg
    return cfg


def notices(cfg: ViewConfig) -> list[str]:
    """Clamping notices that still describe the current configuration."""
    ss = st.session_state
    return ss.get(_NOTICES, []) if ss.get(_NOTICES_FOR) == cfg else []


def add_notice(cfg: ViewConfig, text: str) -> None:
    ss = st.session_state
    if ss.get(_NOTICES_FOR) != cfg:
        ss[_NOTICES] = []
    ss[_NOTICES] = [*ss.get(_NOTICES, []), text]
    ss[_NOTICES_FOR] = cfg


def apply_preset(name: str) -> None:
    """Load a preset into the widgets (call from a callback, before they are drawn)."""
    for k, v in _as_dict(PRESETS[name].config).items():
        st.session_state[k] = v
    st.session_state[STEP] = 0
    st.session_state[ROW] = 0
    st.session_state[PLAYING] = False
    st.session_state["loaded_preset"] = name


def write_url(cfg: ViewConfig, step: int, row: int) -> None:
    """Put the view in the address bar, so the link reopens it (only when it changed)."""
    params = to_query(cfg, step=step, row=row)
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def navigated() -> None:
    """The user moved the step cursor by hand: that pauses auto-play."""
    st.session_state[PLAYING] = False


def take_url_cursor() -> bool:
    """Whether step/row came from the URL and were not checked yet (and clear the mark)."""
    return bool(st.session_state.pop(_URL_CURSOR, False))


def _as_dict(cfg: ViewConfig) -> dict:
    return {k: getattr(cfg, k) for k in FIELDS}

