"""The labs of issue #12 in the app, through AppTest: the split-KV tab (the kernel's chunks,
the partial states and weights as shown, pairwise merges in the learner's order ending at the
oracle and the kernel), the numerics tab (its numbers are the lab's), and your own Q, K, V
(uploaded, refused with a message, traced by head, exported)."""
from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from attnviz import numerics, run_trace, splitkv
from attnviz.export import trace_dict
from attnviz.ui.splitkv import _name, _pool, pick_keys
from tests.test_app import APP, keyed, ok
from tests.test_timing_panel import wait_done


def open_lab(tab: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.query_params.update({k: str(v) for k, v in params.items()})
    ok(at.run())
    at.session_state["panel"] = tab
    return ok(at.run())


FRAMES = {"skv_partials": "chunk", "skv_log": "merge", "num_sweep_table": "logit std",
          "num_masked_table": "row"}  # the first column of each lab table


def frame(at: AppTest, key: str):
    """The st.dataframe ``key`` (AppTest does not carry dataframe keys: by first column)."""
    return next(d.value for d in at.dataframe if d.value.columns[0] == FRAMES[key])


def caption(at: AppTest, start: str) -> str:
    return next(c.value for c in at.caption if c.value.startswith(start))


def numbers(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+e[-+]\d+", text)]


# --- split-KV --------------------------------------------------------------------------------

def test_splitkv_lab_shows_the_kernels_chunks_and_merges_in_the_learners_order(monkeypatch):
    # the built-in chunk size (512 keys), so 3000 keys make several chunks whatever this
    # host's autotune chose (a tuned chunk of 2048 keys would leave one: nothing to merge)
    monkeypatch.setenv("ATTNVIZ_AUTOTUNE", "off")
    at = open_lab("Split-KV decode", mode="decode", cache=2999, D=64, Hq=4, Hkv=1,
                  scenario="late_spike")
    bounds = splitkv.kernel_bounds(3000, 64, B=1, Hkv=1)
    assert len(bounds) > 2  # several chunks for 3000 keys (4 on a 2-core machine)
    assert f"bounds {bounds}" in caption(at, "The kernel's cut for B=1, Hkv=1")
    # the partial states as shown, against the lab computed here
    q_all, k, v = splitkv.lab_inputs("late_spike", 3000, 64, 4, 0)
    states = splitkv.partials(q_all[:, -1], k, v, bounds=bounds)
    O, lse = splitkv.merge(states, range(len(states)))
    w = splitkv.merge_weights(states, lse.astype(np.float64))
    df = frame(at, "skv_partials")
    assert len(df) == 4 * len(states)  # g = Hq / Hkv = 4 heads per chunk
    for c, s in enumerate(states):
        for h in range(4):
            row = df.iloc[c * 4 + h]
            assert float(row["m"]) == pytest.approx(float(s.m[h]), rel=1e-5)
            assert float(row["LSE_c"]) == pytest.approx(float(s.lse[h]), rel=1e-5)
            assert float(row["weight"]) == pytest.approx(w[c, h], abs=1e-4)
    chart = json.loads(next(e for e in at.get("plotly_chart") if e.key == "skv_weights").proto.spec)
    assert len(chart["data"]) == 4
    # merge pair by pair: the last chunk with the first, then the rest in reverse
    C = len(states)
    names = [(c,) for c in range(C)]
    order = [((C - 1,), (0,))]
    merged = (C - 1, 0)
    for c in range(C - 2, 0, -1):
        order.append(((c,), merged))
        merged = (c, *merged)
    for done, (a, b) in enumerate(order):
        key_a, key_b = pick_keys(list(_pool(states, order[:done])), a)
        at.selectbox(key=key_a).set_value(a).run()
        assert at.selectbox(key=key_b).options == [
            _name(n) for n in _pool(states, order[:done]) if n != a]  # no merged state
        at.selectbox(key=key_b).set_value(b).run()
        ok(at.button(key="skv_merge").click().run())
    assert at.session_state["skv_merges"] == order
    log = frame(at, "skv_log")
    assert len(log) == 4 * len(order) and set(log["merge"]) == set(range(1, len(order) + 1))
    assert names  # every chunk took part
    done = at.success[0].value
    # the merges as numbered steps, a merged state in brackets: never "c3+c0 → c2+c3+c0"
    assert done.startswith(f"All {C} chunks merged: (1) c{C - 1} + c0"
                           + (f", then (2) c{C - 2} + [c{C - 1}+c0]" if C > 2 else ". "))
    assert "→" not in done
    err_ref, err_lse_ref, err_k, err_lse_k = numbers(done)
    assert err_ref < 1e-5 and err_lse_ref < 1e-5 and err_k < 1e-5 and err_lse_k < 1e-5
    check = numbers(caption(at, "Token t = 3000"))
    assert len(check) == 3 and max(check) < 1e-5
    # start over: the pool is the chunks again
    ok(at.button(key="skv_reset").click().run())
    assert at.session_state["skv_merges"] == [] and not at.success


def test_splitkv_lab_under_a_narrow_window_says_why_the_kernel_keeps_one_chunk():
    """A learner chose decode, a 64-key window and a 4000-token cache: the page said the
    token attends to all 4001 keys, and the kernel's cut (an empty chunk, then one chunk)
    came with no reason. Now the header names the window and the cut the reason."""
    at = open_lab("Split-KV decode", mode="decode", cache=4000, D=16, Bc=64, Hq=4, Hkv=1,
                  mask="window", W=64)
    intro = caption(at, "The newest token (position 4000)")
    assert "attends to its last 64 keys (a sliding window) of the 4001 of one KV head" in intro
    assert at.radio(key="skv_chunking").value == "kernel"
    cut = caption(at, "The kernel's cut for B=1, Hkv=1")
    assert "shown as an empty chunk" in cut and "The kernel uses a single chunk here" in cut
    assert "widen the window to" in cut


def test_splitkv_lab_names_the_reduce_step_and_opens_on_equal_chunks_when_the_kernel_has_one():
    # the default prefill view: 128 keys are one kernel chunk, nothing to merge
    at = open_lab("Split-KV decode", mode="prefill", L=128, D=16, Br=16, Bc=16, Hq=8, Hkv=8)
    assert len(splitkv.kernel_bounds(128, 16, B=1, Hkv=8)) == 2
    intro = caption(at, "The newest token (position 127)")
    assert "**reduce step**" in intro and "same result up to float32 rounding" in intro
    assert at.radio(key="skv_chunking").value == "equal"
    assert "uses a single chunk (nothing to merge)" in caption(at, "For 128 keys the decode")
    df = frame(at, "skv_partials")
    assert len(df) == 4 and df.columns[-1] == "weight"  # C = 4 chunks, g = 1 head
    q_all, k, v = splitkv.lab_inputs("random", 128, 16, 1, 0)
    states = splitkv.partials(q_all[:, -1], k, v, bounds=splitkv.equal_bounds(128, 4))
    np.testing.assert_allclose(df["m"].astype(float), [s.m[0] for s in states], rtol=1e-5)
    for _ in range(3):
        ok(at.button(key="skv_merge").click().run())  # c0 + c1, then c2 + c3, ...
    done = at.success[0].value
    assert done.startswith("All 4 chunks merged: (1) c0 + c1, then (2) c2 + c3, then (3) [c0+c1] + [c2+c3]. ")
    err = numbers(done)
    assert len(err) == 4 and max(err) < 1e-5


def test_splitkv_lab_equal_chunks_with_a_window_has_empty_chunks_of_weight_zero():
    at = open_lab("Split-KV decode", mode="decode", cache=299, mask="window", W=50, D=16,
                  Hq=2, Hkv=2)
    at.radio(key="skv_chunking").set_value("equal").run()
    at.number_input(key="skv_C").set_value(6).run()
    df = frame(ok(at), "skv_partials")
    assert len(df) == 6  # g = 1
    assert list(df["m"][:5]) == ["−inf"] * 5  # only the last chunk [250, 300) is in the window
    assert [float(x) for x in df["weight"]] == [0, 0, 0, 0, 0, 1]
    for _ in range(5):
        ok(at.button(key="skv_merge").click().run())  # the first two states, each time
    err = numbers(at.success[0].value)
    assert len(err) == 4 and max(err) < 1e-5


# --- numerics ----------------------------------------------------------------------------------

def test_numerics_lab_shows_the_labs_numbers_and_follows_its_controls():
    at = open_lab("Numerics")
    keys = {e.key for e in at.get("plotly_chart")}
    assert keys == {"num_sweep", "num_acc", "num_overflow", "num_masked"}
    e = numerics.error_sweep("float16", L=256, D=64, seed=0)
    df = frame(at, "num_sweep_table")
    np.testing.assert_allclose(df["streaming"].astype(float), e.streaming, rtol=1e-3)
    np.testing.assert_allclose(df["standard"].astype(float), e.standard, rtol=1e-3)
    at.radio(key="num_dtype").set_value("bfloat16").run()
    at.select_slider(key="num_L").set_value(64).run()
    e = numerics.error_sweep("bfloat16", L=64, D=64, seed=0)
    df = frame(ok(at), "num_sweep_table")
    np.testing.assert_allclose(df["floor"].astype(float), e.floor, rtol=1e-3)
    acc = caption(at, "**An emulation**")
    a = numerics.accumulation("bfloat16", Lk=4096, D=64, seed=0)
    assert f"error {a.err_low[-1]:.3g} with a bfloat16 accumulator" in acc
    over = caption(at, "softmax(S) = exp(S)")
    assert "float16 11.09, first NaN on this grid at x = 11.25" in over
    masked = frame(at, "num_masked_table")
    assert list(masked["LSE without"][[1, 3]]) == ["NaN", "NaN"]
    assert list(masked["LSE with"][[1, 3]]) == ["−inf", "−inf"]
    assert list(masked["LSE kernel"][[1, 3]]) == ["−inf", "−inf"]


# --- your own Q, K, V ----------------------------------------------------------------------------

def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_uploaded_arrays_go_through_the_stepper_memory_timing_and_export():
    rng = np.random.default_rng(7)
    q = rng.standard_normal((4, 40, 24)).astype(np.float32)
    k = rng.standard_normal((2, 100, 24)).astype(np.float32)
    v = rng.standard_normal((2, 100, 24)).astype(np.float32)
    at = AppTest.from_file(APP, default_timeout=300)
    ok(at.run())
    at.file_uploader(key="upload_files").set_value(("mine.npz", _npz(q=q, k=k, v=v),
                                                    "application/octet-stream")).run()
    ok(at)
    assert any(c.value.startswith("Loaded: q [4, 40, 24], k [2, 100, 24]") for c in at.caption)
    at.number_input(key="upload_head").set_value(3).run()
    ok(at)
    assert any(c.value.startswith("Query head 3 reads KV head 1") for c in at.caption)
    # the stepper shows head 3 of the upload: chunked prefill, Lq = 40, Lk = 100, D = 24
    expect = run_trace(q[3], k[1], v[1], q_block=16, kv_block=16)
    assert any(m.value.startswith(f"#### Step 1 of {len(expect.steps)}: ")
               for m in at.markdown)
    assert at.query_params["mode"] == "chunked" and at.query_params["D"] == "24"
    # the sidebar names the arrays' sizes and offers no size control that is not in use
    from attnviz.viewconfig import MODES

    assert [i.value for i in at.sidebar.info] == [
        f"Sizes from your arrays (below): {MODES['chunked']}, Lq = 40, Lk = 100, D = 24, "
        "B = 1, Hq = 4, Hkv = 2. Turn off \"Step through my arrays\" to set them here."]
    shown = {w.key for w in at.sidebar.number_input} | {w.key for w in at.sidebar.radio}
    assert not shown & {"L", "chunk", "cache", "B", "Hq", "Hkv", "seed", "mode"}, shown
    assert "D" not in {w.key for w in at.sidebar.select_slider}
    assert any(c.value == "Grid: Tr = 3 Q blocks x Tc = 7 KV blocks." for c in at.sidebar.caption)
    # the trace export holds the upload's numbers and names its source
    dl = next(d for d in at.get("download_button") if d.key == "dl_upload")
    assert dl is not None
    from attnviz.ui.upload import _npz as export_npz

    head = _own(at).traced()
    got = np.load(io.BytesIO(export_npz(_own(at))), allow_pickle=False)
    np.testing.assert_array_equal(got["q"], q[3])
    np.testing.assert_array_equal(got["O"], expect.out)
    assert "mine.npz:q.npy" in head.source
    data = trace_dict(head.trace, {"source": head.source})
    assert data["config"]["Lq"] == 40 and data["config"]["D"] == 24
    # memory and timing panels use the uploaded shapes (B = 1, Hq = 4, Hkv = 2)
    at.session_state["panel"] = "Memory"
    ok(at.run())
    assert any(m.value.startswith("Current: B=1, Hq=4, Hkv=2, Lq=40, Lk=100, D=24")
               for m in at.markdown)
    at.session_state["panel"] = "Timing"
    ok(at.run())
    ok(at.button(key="run_timing").click().run())
    wait_done(at, "current")  # timed runs go through the server's queue, in the background
    diff = caption(at, "max |O_standard")
    assert f"over all B·Hq·Lq·D = {4 * 40 * 24} outputs" in diff
    # the split-KV lab on the group of query head 3: KV head 1, heads 2 and 3, last row
    at.session_state["panel"] = "Split-KV decode"
    ok(at.run())
    # 100 keys are one kernel chunk: the lab opened on equal chunks; the kernel's cut here
    assert at.radio(key="skv_chunking").value == "equal"
    ok(at.radio(key="skv_chunking").set_value("kernel").run())
    df = frame(at, "skv_partials")
    states = splitkv.partials(q[2:4, -1], k[1], v[1], bounds=splitkv.kernel_bounds(
        100, 24, Hkv=2))
    assert len(df) == 2 * len(states)
    assert float(df["m"][1]) == pytest.approx(float(states[0].m[1]), rel=1e-5)
    check = caption(at, "Token t = 100")
    assert "a chunked prefill of your last 40 tokens after the cache" in check
    assert max(numbers(check)) < 1e-5
    # switched off: back to the scenario
    at.toggle(key="upload_use").set_value(False).run()
    assert ok(at).query_params["D"] == "16"
    assert not at.sidebar.info and at.sidebar.radio(key="mode").value == "prefill"
    assert at.sidebar.select_slider(key="D").value == 16


def _loaded(at):
    return at.session_state["_upload_loaded"][1]


def _view(at):
    from attnviz import upload
    from attnviz.viewconfig import FIELDS, ViewConfig

    raw = ViewConfig(**{k: at.session_state[k] for k in FIELDS})
    return upload.view_config(raw, _loaded(at))[0]


def _own(at):
    from attnviz.ui.upload import Own

    return Own(_loaded(at), 3, _view(at))


@pytest.mark.parametrize("files,message", [
    ([("q.npy", b"\x80\x04\x95 pickle", "application/octet-stream")],
     "q.npy is not a NumPy .npy array"),
    ([("qkv.npz", _npz(q=np.zeros((3, 4)), k=np.zeros((5, 4)), v=np.zeros((5, 4), complex)),
       "application/octet-stream")], "qkv.npz:v.npy is complex"),
    ([("qkv.npz", _npz(q=np.zeros((9, 4)), k=np.zeros((5, 4)), v=np.zeros((5, 4))),
       "application/octet-stream")], "q has Lq = 9 rows but k has only Lk = 5 keys"),
])
def test_bad_uploads_show_a_message_and_the_page_keeps_working(files, message):
    at = AppTest.from_file(APP, default_timeout=300)
    ok(at.run())
    at.file_uploader(key="upload_files").set_value(files).run()
    assert not at.exception
    assert [e.value for e in at.error] and at.error[0].value.startswith(message)
    assert keyed(at._tree, "tilemap") is not None  # the scenario's step view is still there


def test_the_one_chunk_hint_names_the_reason_that_holds():
    """Many KV heads: the kernel splits none (raising the cache would not help); one head
    with few keys: too few keys for two chunks; a narrow window: too few visible keys."""
    import numba

    from attnviz.ui.splitkv import one_chunk_reason
    from kernels import decode_split, tuning

    threads = numba.get_num_threads()
    many = threads + 1
    assert decode_split(1, many, 8192, 64, q_offset=8191)[1] == 1  # the kernel agrees
    assert one_chunk_reason(1, many, 8192).startswith(f"Here B·Hkv = {many} KV heads")
    assert decode_split(1, 1, 300, 64, q_offset=299)[1] == 1
    assert one_chunk_reason(1, 1, 300).startswith("The kernel cuts a KV head into chunks")
    assert one_chunk_reason(1, 1, 300).endswith("raise the KV cache length in decode mode to "
                                                "see its own cut.")
    # a long cache seen through a narrow window: the window is what to change
    n = tuning.active().decode_min_chunk
    assert decode_split(1, 1, 8192, 64, q_offset=8191, window=n)[1] == 1
    assert "widen the window" in one_chunk_reason(1, 1, 8192, window=n)
    assert "widen the window" not in one_chunk_reason(1, 1, 8192, window=None)
    # a short cache and a narrow window: widening the window alone would not help
    short = one_chunk_reason(1, 1, n + 100, window=n // 2)
    assert decode_split(1, 1, n + 100, 64, q_offset=n + 99, window=2 * n)[1] == 1
    assert short.endswith(f"raise the KV cache length in decode mode and widen the sliding "
                          f"window (now {n // 2} keys) to {2 * n} or more to see its own cut.")
