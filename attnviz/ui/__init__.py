"""The Streamlit panels of the app, one module per panel; the only package that imports
Streamlit (with ``app.py``, which wires these panels into a page).

    state     session state and the URL: the current configuration, clamped
    cache     warm kernels once per server; one cached trace per configuration
    sidebar   every control of the configuration
    stepper   first / previous / next / last, slider, play/pause
    figures   the step view's images, drawn before its panels (one browser re-render)
    tilemap   the [Tr, Tc] grid of tiles; click a tile to jump to its step
    rowtable  the rows table of the current step (m, l, alpha before and after)
    detail    the current step: S and P~, row states, one row's history and live math, outputs
    memory    full score matrix vs streaming working set
    timing    standard vs streaming on the real kernels, on request
    share     URL, trace downloads, figure PNG
    splitkv   the split-KV decode lab: chunks, partial states, merges in any order
    numerics  the numerics lab: float16/bfloat16 error, accumulation, overflow, masked rows
    upload    your own Q, K, V: upload, checks, head picker (sidebar)
    why       why the result is exact: the invariant on one row's numbers, the accumulator
    quiz      predict, then reveal: a question on the next step, right or wrong, a score
    buglab    the bug lab: a classic mistake on (sidebar), where it departs, back to correct
"""
