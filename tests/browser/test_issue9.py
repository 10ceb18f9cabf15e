"""Issue 9 in real Chromium: what only a browser shows (a field's own bounds, key presses
racing reruns, auto-play against a slow page), and the screenshots of the fixed views.

Screenshots (test-artifacts/issue9_*.png): decode preset tile map, chunked top-left, the
1 x 128 sliver, the error chart of "large logits", the memory tab of "seed's 32x64 blocks".
"""
import re

import pytest
from playwright.sync_api import Page, expect

from .pages import (
    TILEMAP,
    assert_no_exception,
    button,
    click_tile,
    current_step,
    open_view,
    screenshot,
    scroll_to,
    wait_for_step,
)

pytestmark = pytest.mark.browser
LONG_PREFILL = dict(L=4096, D=128, Br=64, Bc=64, Hq=8, Hkv=2)


def _settled(page: Page, quiet_ms: int = 1_500, timeout_ms: int = 60_000) -> int:
    """The step (0-based) once it has not changed for ``quiet_ms``."""
    last, waited = current_step(page)[0], 0
    while waited < timeout_ms:
        page.wait_for_timeout(quiet_ms)
        waited += quiet_ms
        now = current_step(page)[0]
        if now == last:
            return now
        last = now
    raise AssertionError(f"the step kept changing for {timeout_ms} ms")


def test_typing_an_out_of_range_length_clamps_it_with_a_notice(page: Page, app_url: str):
    open_view(page, app_url)
    field = page.get_by_role("spinbutton", name="L (= Lq = Lk)")
    field.fill("99999999")
    field.press("Enter")
    expect(page.get_by_text("L=99999999 is outside [1, 4096]; using 4096.")).to_be_visible(
        timeout=60_000)
    expect(field).to_have_value("4096")
    assert_no_exception(page)


def test_every_arrow_key_press_on_the_slider_counts(page: Page, app_url: str):
    """34 ArrowRight presses on the focused slider landed on step 31: renders of older
    presses moved the thumb back under the later ones."""
    open_view(page, app_url)
    slider = page.locator(".st-key-step_slider input[type=range]")
    slider.focus()
    for _ in range(34):
        page.keyboard.press("ArrowRight")
    wait_for_step(page, 34, timeout=90_000)
    assert _settled(page) == 34
    expect(slider).to_have_value("34")
    expect(page.locator(".st-key-step_slider output")).to_have_text("35 of 36")
    assert_no_exception(page)


def test_pause_lands_and_next_moves_one_step_after_playing_long_prefill(page: Page,
                                                                        app_url: str):
    """Play then Pause on long prefill at 4 steps/s, then Next: on a busy machine the server's
    ticks ran ahead of the page, the Pause landed tens of seconds late and Next jumped (31 to
    516 once). Ticks now come from the page, one per step it has shown."""
    open_view(page, app_url, **LONG_PREFILL)
    page.get_by_role("slider", name="Auto-play speed (steps/s)").focus()
    page.keyboard.press("End")  # 4 steps/s
    expect(page.get_by_role("slider", name="Auto-play speed (steps/s)")).to_have_attribute(
        "aria-valuetext", "4.0")
    button(page, "Play").click()
    expect(button(page, "Pause")).to_be_visible(timeout=30_000)
    page.wait_for_timeout(3_000)
    button(page, "Pause").click()
    expect(button(page, "Play")).to_be_visible(timeout=15_000)
    paused = _settled(page)
    assert paused > 0
    page.wait_for_timeout(2_000)
    assert current_step(page)[0] == paused  # paused: it stays
    button(page, "Next").click()
    wait_for_step(page, paused + 1)
    assert _settled(page) == paused + 1
    assert_no_exception(page)


def test_a_skipped_tile_click_says_why(page: Page, app_url: str):
    open_view(page, app_url)
    click_tile(page, 0, 5)
    expect(page.get_by_text(re.compile(r"^Tile \(0, 5\) is skipped"))).to_be_visible(
        timeout=30_000)
    expect(page.get_by_text(re.compile("lies in the future of every row of Q block 0"))
           ).to_be_visible()
    assert current_step(page)[0] == 0


def test_screenshots_of_the_fixed_views(page: Page, app_url: str):
    open_view(page, app_url, mode="decode", cache=1023, D=128, Br=1, Bc=64, Hq=32, Hkv=8)
    assert current_step(page) == (0, 15)
    screenshot(page, "issue9_decode_tile_map.png")

    open_view(page, app_url, mode="chunked", chunk=128, cache=384, D=64, Br=32, Bc=64,
              align="top-left", step=5)
    screenshot(page, "issue9_chunked_top_left.png")

    # the 128 x 1 grid: big enough to see and to click (tile (i, 0) is step i)
    open_view(page, app_url, L=128, Br=1, Bc=256)
    box = page.locator(TILEMAP).bounding_box()
    assert box["width"] > 150 and box["height"] > 150
    click_tile(page, 100, 0)
    wait_for_step(page, 100)
    screenshot(page, "issue9_sliver_clicked.png")

    open_view(page, app_url, L=256, D=32, Br=32, Bc=32, scenario="large_logits", step=35)
    scroll_to(page, page.get_by_text("Output rows finished so far"))
    screenshot(page, "issue9_large_logits_errors.png")

    open_view(page, app_url, L=512, D=64, Br=32, Bc=64, Hq=16, Hkv=8)
    scroll_to(page, page.get_by_text("Memory: the full score matrix vs a tile"))
    expect(page.get_by_text(re.compile(r"^Streaming working set, per task"))).to_be_visible()
    screenshot(page, "issue9_memory_seed_blocks.png")
    assert_no_exception(page)
