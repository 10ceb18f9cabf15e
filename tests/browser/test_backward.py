"""The Backward tab in real headless Chromium: causal prefill, a sliding window and a GQA
group, stepped with the tab's own Next button. Screenshots go to test-artifacts/
(backward_*.png); look at them."""
import re

import pytest
from playwright.sync_api import Page, expect

from .pages import assert_no_exception, open_view, screenshot, scroll_to

pytestmark = pytest.mark.browser

HEADING = re.compile(r"^Backward step (\d+) of (\d+):")


def _shows_step(page: Page, n: int) -> None:
    """The tab's three figures are loaded images whose alt names step n (1-based)."""
    page.wait_for_function(
        "n => ['bwd_tile_map', 'bwd_tiles', 'bwd_acc'].every(k => {"
        " const img = document.querySelector(`.st-key-${k} img`);"
        " return img && img.complete && img.naturalWidth > 0"
        " && new RegExp(`step ${n}\\\\b`).test(img.alt); })", arg=n, timeout=120_000)
    expect(page.locator(".st-key-bwd_math math").first).to_be_visible(timeout=60_000)


def _open_backward(page: Page, app_url: str, steps: int, **params) -> str:
    open_view(page, app_url, **params)
    page.get_by_role("tab", name="Backward").click()
    _shows_step(page, 1)
    for n in range(2, steps + 1):
        page.locator(".st-key-bwd_next button").click()
        _shows_step(page, n)
    heading = page.locator("h4", has_text=HEADING).first
    expect(heading).to_have_text(re.compile(rf"^Backward step {steps} of \d+:"))
    scroll_to(page, page.locator("h4", has_text="Backward: the gradients"))
    assert_no_exception(page)
    return heading.inner_text()


def test_backward_causal_prefill(page: Page, app_url: str):
    text = _open_backward(page, app_url, 3, L=64, D=16, Br=16, Bc=16)
    # KV block 0 outer: the third tile is still KV block 0, Q block 2
    assert re.search(r"KV block 0 \(keys 0–15\) × Q block 2 \(rows 32–47\)", text), text
    screenshot(page, "backward_01_causal_prefill.png")
    scroll_to(page, page.locator("h4", has_text="Work and memory"))
    expect(page.get_by_text(re.compile(r"= 2\.50×"))).to_be_visible()
    screenshot(page, "backward_02_causal_math_and_costs.png")


def test_backward_sliding_window(page: Page, app_url: str):
    text = _open_backward(page, app_url, 2, L=96, D=16, Br=16, Bc=16, mask="window", W=24)
    assert "KV block 0" in text and "Q block 1" in text, text
    screenshot(page, "backward_03_window.png")


def test_backward_gqa_group(page: Page, app_url: str):
    # 4 Q blocks see KV block 0 under causal: step 5 is query head 1's first tile
    text = _open_backward(page, app_url, 5, L=64, D=16, Br=16, Bc=16, Hq=8, Hkv=2)
    assert "query head 1 of 4" in text and "Q block 0" in text, text
    screenshot(page, "backward_04_gqa.png")


def test_backward_default_view_text_clear_of_the_tile_map(page: Page, app_url: str):
    # the learner's view: the P-check text once ran into the tile map beside the heatmaps
    _open_backward(page, app_url, 1, L=128, D=16, Br=16, Bc=16, mask="causal")
    tile_map = page.locator(".st-key-bwd_tile_map img").bounding_box()
    check = page.get_by_text(re.compile(r"^P recomputed from the saved LSE")).bounding_box()
    heatmaps = page.locator(".st-key-bwd_tiles img").bounding_box()
    assert check["y"] >= tile_map["y"] + tile_map["height"], (check, tile_map)
    assert heatmaps["x"] >= tile_map["x"] + tile_map["width"], (heatmaps, tile_map)
    expect(page.locator("h4", has_text="Live math: row 15, key 0, step 1")).to_be_visible()
    screenshot(page, "backward_05_default_layout.png")
    scroll_to(page, page.locator("h4", has_text="Live math: row 15"))
    screenshot(page, "backward_06_default_live_math.png")
    # row 0 sees key 0 only: dP = D, and its dS is said to be 0 up to float32 rounding
    row = page.get_by_label(re.compile(r"^Row within the tile"))
    row.fill("0")
    row.press("Enter")
    expect(page.locator("h4", has_text="Live math: row 0, key 0, step 1")).to_be_visible(
        timeout=60_000)
    expect(page.get_by_text(re.compile(r"^dS = \S+ here is 0 up to float32 rounding"))
           ).to_be_visible()
    scroll_to(page, page.locator("h4", has_text="Live math: row 0"))
    screenshot(page, "backward_07_row0_dS_rounding.png")
