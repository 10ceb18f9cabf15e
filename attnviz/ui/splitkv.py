"""The split-KV decode lab (a tab below the step view): the newest token of the current
configuration attends to its Lk keys the way the decode kernel does it.

The keys are cut into chunks (the kernel's own cut, or equal chunks the learner picks); a
table gives each chunk's partial state per query head of one GQA group (m, l, |acc|,
LSE_c) and its merge weight exp(LSE_c − LSE). The learner merges any two current states,
pair by pair, in any order; each merge lists its numbers, and the last one is compared with
the float64 oracle and the kernel's decode output. Below: the engine's own check, decode of
token t against the cache vs the last row of a prefill of t tokens.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import streamlit as st

from kernels import decode_block
from kernels.tuning import active as active_tuning

from .. import labplots, splitkv
from ..viewconfig import ViewConfig

MAX_HEADS = 8  # query heads of the group shown (the rest merge the same way)
MAX_CHUNKS = 16
CHUNKINGS = {"kernel": "as the decode kernel cuts them", "equal": "equal chunks (pick C)"}
_MERGES, _FOR = "skv_merges", "skv_for"


def inputs(cfg: ViewConfig, g: int, own=None):
    """(source key, q_all [g, Lq, D], k [Lk, D], v [Lk, D]): the scenario's KV head 0 and its
    first g query heads, or with uploaded arrays in use (``own``) the KV head that the
    chosen query head reads and the first g heads of its group (their last Lq positions)."""
    if own is None:
        key = ("scenario", cfg.scenario, cfg.Lk, cfg.D, g, cfg.seed)
        return (key, *splitkv.lab_inputs(cfg.scenario, cfg.Lk, cfg.D, g, cfg.seed))
    up = own.up
    G = up.Hq // up.Hkv
    hk = own.h // G
    return ("upload", up.digest, hk, g), up.q[hk * G: hk * G + g], up.k[hk], up.v[hk]


@st.cache_data(max_entries=8, show_spinner="Computing the chunks' partial states...")
def _lab(source, causal, window, bounds, _q_all, _k, _v):
    """``source`` keys the inputs (the arrays themselves are not hashed)."""
    q = _q_all[:, -1]
    states = splitkv.partials(q, _k, _v, bounds=list(bounds), causal=causal, window=window)
    O_ref, lse_ref = _oracle(q, _k, _v, causal, window)
    return states, O_ref, lse_ref


def _oracle(q, k, v, causal, window):
    from ..reference import attention_reference

    O, lse = attention_reference(q[:, None], k, v, causal=causal, window=window)
    return O[:, 0], lse[:, 0]


@st.cache_data(max_entries=4, show_spinner="Running the prefill of every token...")
def _check(source, causal, window, _q_all, _k, _v):
    return splitkv.prefill_check(_q_all, _k, _v, causal=causal, window=window)


def _kernel_decode(q, k, v, causal, window):
    from kernels import streaming_attention

    O, lse = streaming_attention(q[None, :, None], k[None, None], v[None, None], causal=causal,
                                 window=window, return_lse=True)
    return O[0, :, 0], lse[0, :, 0]


def pick_keys(names, a=None) -> tuple[str, ...]:
    """The widget keys of the "State a" picker (and of "State b" given a) over the states
    ``names``: new keys whenever the options change (a merge, or another configuration's
    chunks), since a keyed selectbox given new options kept showing a stale choice in the
    browser while the script read another."""
    options = zlib.crc32(" ".join(map(_name, names)).encode())
    key_a = f"skv_a_{options:08x}"
    return (key_a,) if a is None else (key_a, f"{key_a}_b_{_name(a)}")


def one_chunk_reason(B: int, Hkv: int, Lk: int, window: int | None = None) -> str:
    """Why ``kernels.decode_split`` keeps a single chunk here, and what would change it: the
    B·Hkv tasks already keep every thread busy, the window lets the query see too few keys,
    or the cache holds too few for two chunks."""
    import numba

    threads, n = numba.get_num_threads(), active_tuning().decode_min_chunk
    if B * Hkv > threads:  # decode_split: about two tasks per thread, B·Hkv·C in all
        return (f"Here B·Hkv = {B * Hkv} KV heads are already more tasks than this machine's "
                f"{threads} threads, so the kernel splits none of them; with B·Hkv at most "
                f"{threads} (and at least {2 * n} keys) it would cut each into chunks.")
    need = (f"The kernel cuts a KV head into chunks of at least {n} keys, so it needs at "
            f"least 2 × {n} = {2 * n} visible keys for two; ")
    narrow = bool(window) and window < 2 * n
    if narrow and Lk >= 2 * n:
        return need + (f"the sliding window lets the newest token see only its last {window} "
                       f"keys: widen the window to {2 * n} or more to see the kernel's own cut.")
    return need + ("raise the KV cache length in decode mode" + (
        f" and widen the sliding window (now {window} keys) to {2 * n} or more" if narrow
        else "") + " to see its own cut.")


def _name(chunks: tuple[int, ...]) -> str:
    return "+".join(f"c{c}" for c in chunks)


def _pool(states, merges):
    """The current states after replaying the learner's merges (pairs of chunk tuples)."""
    pool = {s.chunks: s for s in states}
    for a, b in merges:
        merged = splitkv.merge_pair(pool.pop(tuple(a)), pool.pop(tuple(b)))
        pool[merged.chunks] = merged
    return pool


def _fmt(x: float) -> str:
    return "−inf" if x == -np.inf else f"{x:.6g}"


def _merge(a, b) -> None:
    st.session_state[_MERGES] = [*st.session_state.get(_MERGES, []), (a, b)]


def render(cfg: ViewConfig, own=None) -> None:
    """``own``: the uploaded arrays in use (``ui.upload.Own``), or None for the scenario."""
    st.markdown("#### Split-KV decode: the chunks, their partial states, and the merge")
    g_all = cfg.Hq // cfg.Hkv
    g = min(g_all, MAX_HEADS)
    Lk, window, causal = cfg.Lk, cfg.window, cfg.causal
    st.caption(
        f"The newest token (position {Lk - 1}) attends to "
        + (f"its last {min(window, Lk)} keys (a sliding window) of the {Lk} "
           if window and window < Lk else f"all {Lk} keys ")
        + "of one KV head, for "
        f"the {g_all} query head(s) of its GQA group" + (f" (the first {g} shown)" if g < g_all
                                                         else "") +
        ". The decode kernel (Flash-Decoding) cuts the keys into chunks, computes each chunk's "
        "partial state (m, l, acc) in parallel, and merges them in a **reduce step**: "
        "m = max(m_a, m_b), l = l_a·e^(m_a−m) + l_b·e^(m_b−m), acc likewise; O = acc / l, "
        "LSE = m + log l. The merge is associative and commutative, so any order gives the "
        "same result up to float32 rounding (each order rounds its sums differently)."
        + ("" if cfg.mode == "decode" else " (This configuration is not in decode mode: the "
           "lab takes the decode step of its last position.)")
        + (f" Inputs: your arrays, the group of query head {own.h}." if own else ""))
    c1, c2 = st.columns([2, 1], vertical_alignment="bottom")
    kernel_cut = splitkv.kernel_bounds(Lk, cfg.D, B=cfg.B, Hkv=cfg.Hkv, causal=causal,
                                       window=window)
    # one kernel chunk leaves nothing to merge: then the lab opens on equal chunks
    how = c1.radio("Chunks", list(CHUNKINGS), format_func=CHUNKINGS.get, key="skv_chunking",
                   horizontal=True, index=int(len(kernel_cut) <= 2))
    if how == "kernel":
        bounds = kernel_cut
    else:
        C = c2.number_input("C (chunks)", 1, MAX_CHUNKS, value=4, key="skv_C")
        bounds = splitkv.equal_bounds(Lk, int(C))
    source, q_all, k, v = inputs(cfg, g, own)
    key = (source, causal, window, tuple(bounds))
    if st.session_state.get(_FOR) != key:
        st.session_state[_FOR], st.session_state[_MERGES] = key, []
    states, O_ref, lse_ref = _lab(*key, q_all, k, v)
    if how == "kernel":
        min_chunk = active_tuning().decode_min_chunk
        visible = sum(not s.empty for s in states)
        st.caption(f"The kernel's cut for B={cfg.B}, Hkv={cfg.Hkv} on this machine "
                   "(kernels.decode_split: about two tasks per thread, but no more chunks "
                   f"than the visible keys hold minimum chunks of {min_chunk} keys; the tiles of "
                   f"{decode_block(cfg.D)} keys, the decode's KV block for D, shared out "
                   "evenly, so the last chunk may be shorter; both sizes measured per host "
                   f"or built-in): bounds {bounds}." + (
                       " Keys before the window's first tile are never visited: shown as "
                       "an empty chunk." if window and bounds[1] > 0 and states[0].empty
                       else "")
                   + (" The kernel uses a single chunk here, so there is nothing to merge: "
                      "pick equal chunks to merge some by hand. "
                      + one_chunk_reason(cfg.B, cfg.Hkv, Lk, window)
                      if visible <= 1 else ""))
    elif len(kernel_cut) <= 2:
        st.caption(f"For {Lk} keys the decode kernel on this machine uses a single chunk "
                   "(nothing to merge), so the lab cuts the keys into C equal chunks instead. "
                   + one_chunk_reason(cfg.B, cfg.Hkv, Lk, window))

    O, lse = splitkv.merge(states, range(len(states)))
    w = splitkv.merge_weights(states, lse.astype(np.float64))
    rows = []
    for c, s in enumerate(states):
        O_c, lse_c = s.finalized()
        for h in range(g):
            rows.append({"chunk": labplots.chunk_label(c, s.keys[0]), "head": h,
                         "m": _fmt(s.m[h]), "l": _fmt(s.l[h]),
                         "|acc|": _fmt(float(np.linalg.norm(s.acc[h]))),
                         "LSE_c": _fmt(lse_c[h]), "weight": f"{w[c, h]:.4g}"})
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.markdown("##### Partial state of each chunk")
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="skv_partials",
                     height=_height(len(rows)))
        st.caption("weight = exp(LSE_c − LSE), the chunk's share of O. An empty chunk (no "
                   "visible key) has m = −inf, l = 0, acc = 0, LSE = −inf: "
                   "the identity of the merge, weight 0.")
    with right:
        st.plotly_chart(labplots.merge_weights_chart(w, [s.keys[0] for s in states]),
                        theme=None, key="skv_weights")
        O_mix = sum(w[c][:, None] * s.finalized()[0] for c, s in enumerate(states))
        st.caption(f"Σ_c weight = {', '.join(f'{x:.6f}' for x in w.sum(axis=0))} (per head); "
                   "O = Σ_c weight_c · O_c with O_c = acc_c / l_c: max |difference| "
                   f"{np.abs(O_mix - O).max():.2e}.")

    st.markdown("##### Merge them yourself, pair by pair, in any order")
    try:
        pool = _pool(states, st.session_state[_MERGES])
    except (KeyError, ValueError):  # a stale merge list: start over
        st.session_state[_MERGES] = []
        pool = _pool(states, [])
    names = list(pool)
    c1, c2, c3, c4 = st.columns([2, 2, 1, 1], vertical_alignment="bottom")
    if len(names) > 1:
        key_a = pick_keys(names)[0]
        a = c1.selectbox("State a", names, format_func=_name, key=key_a)
        rest = [n for n in names if n != a]
        _, key_b = pick_keys(names, a)
        b = c2.selectbox("State b", rest, format_func=_name, key=key_b)
        c3.button("Merge a and b", key="skv_merge", on_click=_merge, args=(a, b),
                  type="primary")
    st.caption(f"{len(names)} state(s) now: {', '.join(_name(n) for n in names)}.")
    if st.session_state[_MERGES]:
        c4.button("Start over", key="skv_reset",
                  on_click=lambda: st.session_state.update({_MERGES: []}))
    log = []
    replay = {s.chunks: s for s in states}
    for n, (a, b) in enumerate(st.session_state[_MERGES]):
        sa, sb = replay.pop(tuple(a)), replay.pop(tuple(b))
        sm = splitkv.merge_pair(sa, sb)
        replay[sm.chunks] = sm
        lse_m = sm.lse
        for h in range(g):
            with np.errstate(invalid="ignore"):
                ea = np.exp(np.float64(sa.m[h]) - sm.m[h]) if sm.m[h] > -np.inf else 0.0
                eb = np.exp(np.float64(sb.m[h]) - sm.m[h]) if sm.m[h] > -np.inf else 0.0
            log.append({"merge": n + 1, "a": _name(sa.chunks), "b": _name(sb.chunks),
                        "head": h, "m_a": _fmt(sa.m[h]), "m_b": _fmt(sb.m[h]),
                        "m": _fmt(sm.m[h]), "e^(m_a−m)": f"{ea:.6g}",
                        "e^(m_b−m)": f"{eb:.6g}", "l": _fmt(sm.l[h]),
                        "LSE": _fmt(lse_m[h])})
    if log:
        st.dataframe(pd.DataFrame(log), hide_index=True, key="skv_log",
                     height=_height(len(log)))
    else:
        st.caption("Pick two states and merge them; a merged state can be merged again.")
    if len(pool) == 1:
        final = next(iter(pool.values()))
        O_me, lse_me = final.finalized()
        O_k, lse_k = _kernel_decode(q_all[:, -1], k, v, causal, window)
        order = _history(st.session_state[_MERGES])
        st.success(
            (f"All {len(states)} chunks merged: {order}. " if order else
             "A single chunk: nothing to merge. ") +
            f"max |O − O_float64| = {np.abs(O_me - O_ref).max():.2e}, "
            f"max |LSE − LSE_float64| = {_lse_diff(lse_me, lse_ref):.2e}; "
            f"max |O − O_kernel decode| = {np.abs(O_me - O_k).max():.2e}, "
            f"max |LSE − LSE_kernel| = {_lse_diff(lse_me, lse_k):.2e}.",
            icon=":material/check_circle:")

    st.markdown("##### The engine's own check: decode of token t = last row of a prefill of t")
    chk = _check(source, causal, window, q_all, k, v)
    st.caption(
        f"Token t = {Lk} (position {Lk - 1}): streaming_attention decoding it against the "
        "cache (split-KV path) and " + (
            f"a prefill of all {Lk} tokens" if q_all.shape[1] == Lk else
            f"a chunked prefill of your last {q_all.shape[1]} tokens after the cache")
        + " (Q-block path), last row, "
        f"for {g} head(s): max |O_decode − O_prefill,last| = {chk['decode_vs_prefill']:.2e}; "
        f"against the float64 oracle: decode {chk['decode_vs_oracle']:.2e}, prefill "
        f"{chk['prefill_vs_oracle']:.2e}. " + (
            "(Different paths sum in different orders: equal to float32 rounding, not "
            "always bit for bit; here they happen to agree exactly.)"
            if chk["decode_vs_prefill"] == 0 else
            "(Different paths sum in different orders: equal to float32 rounding, not bit "
            "for bit.)"))


def _height(rows: int) -> int:
    """A dataframe's height in pixels for ``rows`` rows (header included, no blank rows),
    scrolling past 10."""
    return 2 + 35 * (1 + min(rows, 10))


def _history(merges) -> str:
    """The learner's merges in order: "(1) c3 + c1, then (2) c0 + c2, then (3) [c3+c1] +
    [c0+c2]" (a merged state in brackets, so no step reads as turning into the next)."""
    def state(chunks):
        return _name(chunks) if len(chunks) == 1 else f"[{_name(chunks)}]"
    return ", then ".join(f"({n}) {state(a)} + {state(b)}"
                          for n, (a, b) in enumerate(merges, start=1))


def _lse_diff(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    same = a == b  # covers -inf == -inf
    with np.errstate(invalid="ignore"):
        return float(np.where(same, 0.0, np.abs(a - b)).max())
