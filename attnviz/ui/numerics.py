"""The numerics lab (a tab below the step view): low precision, measured live.

Its own small controls (dtype, sizes, seed), then four experiments from ``attnviz.numerics``,
each a chart and the numbers that matter: FlashAttention's error measure over a sweep of
logit scales; P~V accumulated in the low dtype (an emulation) vs float32; softmax without
the max subtracted (exp overflow); the masked-row guard.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from .. import labplots, numerics

SIZES = (64, 128, 256, 512)
D_CHOICES = (16, 32, 64, 128)
KEYS = (512, 1024, 2048, 4096, 8192)


@st.cache_data(max_entries=16, show_spinner="Sweeping logit scales...")
def _sweep(dtype, L, D, seed):
    return numerics.error_sweep(dtype, L=L, D=D, seed=seed)


@st.cache_data(max_entries=16, show_spinner="Accumulating...")
def _acc(dtype, Lk, D, seed):
    return numerics.accumulation(dtype, Lk=Lk, D=D, seed=seed)


@st.cache_data(max_entries=2)
def _overflow():
    return numerics.overflow()


@st.cache_data(max_entries=4)
def _masked(seed):
    return numerics.masked_rows(seed=seed)


def _v(x) -> str:
    x = float(x)
    return "NaN" if np.isnan(x) else "−inf" if x == -np.inf else f"{x:.4g}"


def render() -> None:
    st.markdown("#### Numerics: what float16 and bfloat16 do to attention")
    st.caption("Inputs are rounded to the low dtype by a cast (NumPy's float16; ml_dtypes' "
               "bfloat16). Everything below is computed when you change a control.")
    c1, c2, c3, c4 = st.columns(4)
    dtype = c1.radio("Input dtype", list(numerics.LOW), key="num_dtype", horizontal=True)
    L = c2.select_slider("L (queries = keys)", SIZES, value=256, key="num_L")
    D = c3.select_slider("Head dim D", D_CHOICES, value=64, key="num_D")
    seed = c4.number_input("Seed", 0, 2**31 - 1, value=0, key="num_seed")

    st.markdown("##### 1. Error, FlashAttention's way")
    e = _sweep(dtype, L, D, int(seed))
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.plotly_chart(labplots.error_sweep_chart(e), theme=None, key="num_sweep")
    with right:
        st.caption(
            "FlashAttention's authors judge a low-precision kernel by max |flash(low) − "
            "reference| beside max |standard(low) − reference|, with the reference in higher "
            "precision on the same rounded inputs. Here q is scaled so the logits S have the "
            f"std on the x axis; causal, L = {L}, D = {D}. Streaming keeps S, m, l and acc in "
            f"float32 and rounds only O to {dtype}; the standard way stores S, P, l and O in "
            f"{dtype}, so large logits lose their low bits before exp.")
    # the page's width: five columns in the narrow right column were cut off
    st.dataframe(pd.DataFrame({
        "logit std": e.logit_std, "streaming": [_v(x) for x in e.streaming],
        "standard": [_v(x) for x in e.standard], "floor": [_v(x) for x in e.floor],
        "streaming, O fp32": [_v(x) for x in e.streaming_fp32]}),
        hide_index=True, key="num_sweep_table")

    st.markdown("##### 2. Where float32 accumulation matters: P~V summed in " + dtype)
    Lk = st.select_slider("Keys summed", KEYS, value=4096, key="num_keys")
    a = _acc(dtype, Lk, D, int(seed))
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.plotly_chart(labplots.accumulation_chart(a), theme=None, key="num_acc")
    with right:
        st.caption(
            f"**An emulation**, not a kernel: 8 query rows, each key's term p·v added into an "
            f"accumulator that is rounded to {dtype} after every add (NumPy's cumsum in that "
            "dtype, as a half-precision MMA accumulator would), against the same adds in "
            "float32. V has mean 1, as real value channels often have, so the sum grows "
            "and late small terms fall below the accumulator's resolution. "
            f"After {a.n[-1]} keys: error {a.err_low[-1]:.3g} with a {dtype} accumulator, "
            f"{a.err_fp32[-1]:.3g} with float32. This is why the kernels keep m, l and acc "
            "in float32 whatever the input dtype.")

    st.markdown("##### 3. Without the max: exp overflows")
    o = _overflow()
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.plotly_chart(labplots.overflow_chart(o), theme=None, key="num_overflow")
    with right:
        st.caption(
            "softmax(S) = exp(S) / Σ exp(S) computed directly, for a row whose top logit is x "
            "(the others a little below), against the exact softmax of the same stored row. "
            "exp(x) overflows to inf above ln(max): "
            + "; ".join(f"{n} {o.limit[n]:.2f}, first NaN on this grid at x = "
                        f"{o.first_bad[n]:g}" for n in o.limit)
            + ". Then inf / inf = NaN. In float16 the sum overflows a little earlier (p = 0, "
            "a finite but wrong answer). Subtracting the row max first (online softmax: the "
            "running max m) keeps every exponent ≤ 0: the dotted lines stay at the dtype's "
            "rounding error. bfloat16 has float32's range, so only its precision suffers.")

    st.markdown("##### 4. The masked-row guard")
    mr = _masked(int(seed))
    empty = np.flatnonzero(mr.m == -np.inf)
    left, right = st.columns([3, 2], gap="large")
    with left:
        st.plotly_chart(labplots.masked_rows_chart(mr), theme=None, key="num_masked")
    with right:
        st.caption(
            f"P~ of a score tile whose rows {', '.join(map(str, empty))} see no key (rows "
            "before position 0, or outside every window). There m = max(−inf, ...) = −inf, "
            "and exp(S − m) = exp(−inf − (−inf)) = exp(NaN): the NaN spreads to l, O and "
            "LSE. The guard subtracts 0 instead when m = −inf: P~ = 0, l = 0, and the row "
            "ends with O = 0 and LSE = −inf. The kernel (streaming_attention) gives the same "
            "for those rows.")
    st.dataframe(pd.DataFrame({
        "row": np.arange(len(mr.m)), "m": [_v(x) for x in mr.m],
        "l without": [_v(x) for x in mr.l_raw], "LSE without": [_v(x) for x in mr.lse_raw],
        "O₀ without": [_v(x) for x in mr.O_raw[:, 0]], "l with": [_v(x) for x in mr.l],
        "LSE with": [_v(x) for x in mr.lse], "O₀ with": [_v(x) for x in mr.O[:, 0]],
        "LSE kernel": [_v(x) for x in mr.lse_kernel],
        "O₀ kernel": [_v(x) for x in mr.O_kernel[:, 0]]}),
        hide_index=True, key="num_masked_table")
    st.caption("O₀ is the first entry of each output row.")
