"""The labs of issue #12 in real headless Chromium: split-KV merges by clicking, the numerics
lab's four charts and its dtype switch, your own Q, K, V uploaded through the page (and a
pickle refused). Screenshots go to test-artifacts/ (labs_*.png); look at them."""
import re

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from .pages import assert_no_exception, button, open_view, screenshot, scroll_to, wait_ready

pytestmark = pytest.mark.browser
NUM = r"(\d\.\d\de[-+]\d\d)"


def _idle(page: Page, timeout: float = 120_000) -> None:
    """The last rerun has finished (Streamlit's running indicator is gone)."""
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=timeout)


def test_splitkv_lab_merge_by_clicking(page: Page, app_url: str):
    # 4096 keys: at least two chunks whatever chunk size (<= 2048 keys) this host tuned
    open_view(page, app_url, mode="decode", cache=4095, D=64, Hq=4, Hkv=1,
              scenario="late_spike")
    page.get_by_role("tab", name="Split-KV decode").click()
    chart = page.locator(".st-key-skv_weights .js-plotly-plot")
    expect(chart).to_be_visible(timeout=120_000)
    cut = page.get_by_text(re.compile(r"^The kernel's cut for B=1, Hkv=1 .* bounds \[0, "))
    expect(cut).to_be_visible()
    n_chunks = len(re.search(r"bounds \[([^\]]*)\]", cut.inner_text()).group(1).split(",")) - 1
    assert n_chunks >= 2
    scroll_to(page, page.get_by_text("Split-KV decode: the chunks"))
    screenshot(page, "labs_01_splitkv_partials.png")
    merge = button(page, "Merge a and b")
    expect(page.get_by_text(f"{n_chunks} state(s) now: c0, c1")).to_be_visible()
    for n in range(1, n_chunks):  # the first two states each time, until one is left
        merge.click()
        expect(page.get_by_text(re.compile(rf"^{n_chunks - n} state\(s\) now: "))
               ).to_be_visible(timeout=60_000)
        _idle(page)
    done = page.get_by_text(re.compile(r"^All \d+ chunks merged"))
    expect(done).to_be_visible(timeout=60_000)
    errs = [float(x) for x in re.findall(NUM, done.inner_text())]
    assert len(errs) == 4 and max(errs) < 1e-5, done.inner_text()
    scroll_to(page, page.get_by_text("Merge them yourself"))
    screenshot(page, "labs_02_splitkv_merged.png")
    assert_no_exception(page)


def test_splitkv_lab_opens_on_equal_chunks_when_the_kernel_uses_one(page: Page, app_url: str):
    # 193 keys are one kernel chunk: the lab opens on 4 equal chunks, its table as tall as
    # its 4 rows (it once showed 4 blank rows and a cut "weight exp(…)" header)
    open_view(page, app_url, mode="decode", cache=192, D=16, Br=16, Bc=16, mask="causal",
              Hq=8, Hkv=8)
    page.get_by_role("tab", name="Split-KV decode").click()
    expect(page.locator(".st-key-skv_weights .js-plotly-plot")).to_be_visible(timeout=120_000)
    expect(page.get_by_text(re.compile(r"^For 193 keys the decode kernel on this machine uses "
                                       r"a single chunk"))).to_be_visible()
    expect(page.get_by_text("reduce step")).to_be_visible()
    table = page.locator('[data-testid="stDataFrame"]').first  # the partial-state table
    expect(table).to_be_visible()
    box = table.bounding_box()
    assert box["height"] < 6 * 35 + 20, box  # header + 4 rows, no blank rows below
    scroll_to(page, page.get_by_text("Split-KV decode: the chunks"))
    screenshot(page, "labs_07_splitkv_equal_default.png")
    merge = button(page, "Merge a and b")
    for n in range(1, 4):
        merge.click()
        now = page.get_by_text(re.compile(rf"^{4 - n} state\(s\) now: "))
        expect(now).to_be_visible(timeout=60_000)
        _idle(page)
        # the pickers show states that exist (a keyed picker once kept showing "c0" after
        # c0 was merged away, while the script read another state)
        states = now.inner_text().split(": ", 1)[1].rstrip(".").split(", ")
        if n < 3:
            for label in ("State a", "State b"):
                assert page.get_by_role("combobox", name=label).input_value() in states
    done = page.get_by_text(re.compile(r"^All 4 chunks merged: \(1\) c0 \+ c1, then \(2\) "))
    expect(done).to_be_visible(timeout=60_000)
    scroll_to(page, page.get_by_text("Merge them yourself"))
    screenshot(page, "labs_08_splitkv_equal_merged.png")
    assert_no_exception(page)


def test_numerics_lab_charts_and_dtype_switch(page: Page, app_url: str):
    open_view(page, app_url)
    page.get_by_role("tab", name="Numerics").click()
    for key in ("num_sweep", "num_acc", "num_overflow", "num_masked"):
        expect(page.locator(f".st-key-{key} .js-plotly-plot")).to_be_visible(timeout=120_000)
    scroll_to(page, page.get_by_text("Numerics: what float16"))
    screenshot(page, "labs_03_numerics_error_and_accumulation.png")
    page.get_by_text("bfloat16", exact=True).first.click()
    expect(page.get_by_text(re.compile(r"error .* with a bfloat16 accumulator"))).to_be_visible(
        timeout=120_000)
    _idle(page)
    # one title, the new one: while the rerun replaces the chart, the stale float16 one may
    # still stand beside it for a moment
    expect(page.locator(".st-key-num_sweep .gtitle")).to_have_text(
        [re.compile(r"inputs in bfloat16$")], timeout=60_000)
    scroll_to(page, page.get_by_text("3. Without the max"))
    screenshot(page, "labs_04_numerics_overflow_and_guard.png")
    assert_no_exception(page)


def test_upload_own_qkv_and_a_refused_pickle(page: Page, app_url: str, tmp_path):
    rng = np.random.default_rng(11)
    path = tmp_path / "mine.npz"
    np.savez(path, q=rng.standard_normal((2, 48, 32)).astype(np.float32),
             k=rng.standard_normal((1, 96, 32)).astype(np.float16),
             v=rng.standard_normal((1, 96, 32)))
    open_view(page, app_url)
    files = page.locator(".st-key-upload_files input[type=file]")
    files.set_input_files(str(path))
    expect(page.get_by_text(re.compile(r"^Loaded: q \[2, 48, 32\], k \[1, 96, 32\]"))
           ).to_be_visible(timeout=60_000)
    _idle(page)
    wait_ready(page)
    # chunked prefill of 48 new rows after 48 cached keys, 16 x 16 tiles: 3 x 6 grid
    expect(page.locator("h4", has_text=re.compile(r"^Step 1 of \d+: Q block 0"))).to_be_visible()
    page.wait_for_url(re.compile(r"[?&]mode=chunked(&|$)"), timeout=30_000)
    assert "D=32" in page.url
    page.locator(".st-key-upload_files").scroll_into_view_if_needed()
    screenshot(page, "labs_05_upload_stepper.png")

    pickle_path = tmp_path / "q.npy"
    pickle_path.write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00}\x94.")
    files.set_input_files([str(pickle_path)])
    expect(page.get_by_text(re.compile(r"^q.npy is not a NumPy .npy array"))).to_be_visible(
        timeout=60_000)
    _idle(page)
    wait_ready(page)  # the scenario's step view is back
    page.locator(".st-key-upload_files").scroll_into_view_if_needed()
    screenshot(page, "labs_06_upload_refused.png")
    assert_no_exception(page)
