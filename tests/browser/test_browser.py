"""The app in real headless Chromium: open, step, click a tile, play/pause, time, export.

Screenshots go to test-artifacts/ (1280 x 1600 viewport); look at them after a change.
"""
import re

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from .pages import (
    TILEMAP,
    assert_no_exception,
    button,
    click_tile,
    current_step,
    open_view,
    outline_color,
    outlined_tile,
    screenshot,
    scroll_to,
    wait_for_step,
)
from .server import ARTIFACTS

pytestmark = pytest.mark.browser
OUTLINE = (220, 38, 38)  # images.CURRENT_COLOR on screen


def _red(color) -> bool:
    return color[0] > 180 and color[1] < 90 and color[2] < 90


def _settled_step(page: Page, quiet_ms: int = 1_500, timeout_ms: int = 20_000) -> int:
    """The step once it has not changed for ``quiet_ms``."""
    last, waited = current_step(page)[0], 0
    while waited < timeout_ms:
        page.wait_for_timeout(quiet_ms)
        waited += quiet_ms
        now = current_step(page)[0]
        if now == last:
            return now
        last = now
    raise AssertionError(f"the step kept changing for {timeout_ms} ms after pausing")


def test_open_step_click_a_tile_and_play(page: Page, app_url: str):
    open_view(page, app_url)
    assert current_step(page) == (0, 35)
    assert outlined_tile(page) == [0, 0]
    assert _red(outline_color(page, 0, 0)) and not _red(outline_color(page, 1, 0))
    for key in ("step_tiles", "row_history", "output_rows"):  # drawn, at most their width
        box = page.locator(f".st-key-{key} img").bounding_box()
        assert box and box["width"] > 300 and box["height"] > 150, key
    screenshot(page, "01_first_look.png")

    for n in (1, 2, 3):
        button(page, "Next").click()
        wait_for_step(page, n)
    button(page, "Prev").click()
    wait_for_step(page, 2)

    # first look: 8 x 8 tiles of 16; tile (5, 3) is full; its step is the 4th of Q block 5
    click_tile(page, 5, 3)
    n = 1 + 2 + 3 + 4 + 5 + 3  # steps of Q blocks 0..4, then j = 0, 1, 2 before (5, 3)
    wait_for_step(page, n)
    page.wait_for_function(f"() => document.querySelector('{TILEMAP}').dataset.current"
                           " === '5,3'")
    assert outlined_tile(page) == [5, 3]
    page.wait_for_timeout(300)  # the new image painted
    assert _red(outline_color(page, 5, 3)) and not _red(outline_color(page, 0, 0))
    screenshot(page, "02_tile_clicked.png")

    button(page, "Play").click()
    expect(button(page, "Pause")).to_be_visible(timeout=15_000)
    page.wait_for_timeout(2_500)
    button(page, "Pause").click()
    expect(button(page, "Play")).to_be_visible(timeout=15_000)
    played = _settled_step(page)  # a tick in flight at the click may still be drawing
    assert played > n
    page.wait_for_timeout(2_500)
    assert current_step(page)[0] == played  # paused: it stays
    wait_for_step(page, played)
    assert_no_exception(page)

    click_tile(page, 7, 7)  # the last tile: a full row history, every output row final
    wait_for_step(page, 35)
    scroll_to(page, page.get_by_text("One row, step by step"))
    screenshot(page, "03_row_history_and_live_math.png")
    scroll_to(page, page.get_by_text("Output rows finished so far"))
    screenshot(page, "04_output_rows.png")


def _press(page: Page, key: str) -> None:
    """A step shortcut, sent once the previous rerun has finished (a key that arrives while
    Streamlit re-renders the buttons can be dropped) and with no input focused."""
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
    page.get_by_role("heading", name="Streaming attention, tile by tile").click()
    page.keyboard.press(key)


def test_keyboard_steps(page: Page, app_url: str):
    open_view(page, app_url)
    _press(page, "ArrowRight")
    wait_for_step(page, 1)
    _press(page, "End")
    wait_for_step(page, 35)
    _press(page, "ArrowLeft")
    wait_for_step(page, 34)
    # the step slider: with focus, its own arrow keys move it one step (and the page's
    # Left/Right shortcuts stay out of it); released by the mouse, it jumps
    slider = page.locator(".st-key-step_slider input[type=range]")
    expect(slider).to_have_value("34")
    slider.focus()
    page.keyboard.press("ArrowLeft")
    wait_for_step(page, 33)
    expect(slider).to_have_value("33")
    page.wait_for_timeout(800)  # the page's Left shortcut did not fire as well (-> 32)
    assert current_step(page)[0] == 33
    assert page.locator(".st-key-live_math math").count() >= 2  # the MathML is laid out
    assert page.locator(".st-key-live_math math").first.bounding_box()["height"] > 10
    box = slider.bounding_box()
    page.mouse.click(box["x"] + 0.02 * box["width"], box["y"] + box["height"] / 2)
    wait_for_step(page, 0)
    assert_no_exception(page)


def test_presets_and_shared_url(page: Page, app_url: str):
    open_view(page, app_url, mode="chunked", chunk=128, cache=384, D=64, Br=32, Bc=64,
              step=7, row=3)
    assert current_step(page)[0] == 7
    assert outlined_tile(page) is not None
    screenshot(page, "05_chunked_prefill_from_url.png")
    open_view(page, app_url, L=99999, step=-3)
    expect(page.get_by_text("L='99999' is outside [1, 4096]; using 4096.")).to_be_visible()
    assert current_step(page)[0] == 0
    screenshot(page, "06_clamped_url_notice.png")
    # the late-spike preset at the last tile of row 255's block: the big rescale
    open_view(page, app_url, L=256, D=32, Br=32, Bc=32, scenario="late_spike", step=35, row=31)
    assert current_step(page) == (35, 35)
    scroll_to(page, page.get_by_text("One row, step by step"))
    screenshot(page, "07_late_spike_rescale.png")
    assert_no_exception(page)


def _largest_L(page: Page, presses: int, key: str) -> None:
    """Move the "Largest L" select slider by keyboard."""
    page.locator(".st-key-sweep_Lmax input[type=range]").focus()
    for _ in range(presses):
        page.keyboard.press(key)


def test_timing_memory_and_png_export(page: Page, app_url: str):
    open_view(page, app_url)
    page.get_by_role("tab", name="Timing").click()
    button(page, "Time standard vs streaming").click()
    expect(page.get_by_text(re.compile(r"^max \|O_standard − O_streaming\|"))).to_be_visible(
        timeout=180_000)  # timed in the background, then each method's memory in a process
    expect(page.get_by_text(re.compile(r"^Threads: \d+"))).to_be_visible()

    # a sweep cancelled after its first lengths: the points so far stay on screen
    button(page, "Run the sweep").click()
    expect(page.locator('[data-testid="stProgress"]', has_text="done")).to_be_visible(
        timeout=120_000)
    button(page, "Cancel").click()
    expect(page.get_by_text(re.compile(r"^Sweep over L cancelled after \d+ point"))
           ).to_be_visible(timeout=60_000)
    # a complete small one: L = 256, 512, 1024
    _largest_L(page, 2, "ArrowLeft")
    expect(page.locator(".st-key-sweep_Lmax [data-testid=stSliderThumbValue]")).to_have_text(
        "1024")
    button(page, "Run the sweep").click()
    expect(page.get_by_text(re.compile(r"^Sweep over L cancelled"))).to_have_count(
        0, timeout=120_000)
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(0, timeout=180_000)
    # until the sweep's run is over, the previous run's chart can stay on screen beside the
    # new one (the progress bar moved it): wait for the run to end, then for one chart
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=120_000)
    chart = page.locator(".st-key-crossover_chart .js-plotly-plot")
    expect(chart).to_have_count(1, timeout=60_000)
    expect(chart).to_be_visible()
    scroll_to(page, page.get_by_text("Sweep over L"))
    screenshot(page, "08_timing.png")
    assert_no_exception(page)

    page.get_by_role("tab", name="Memory").click()
    scroll_to(page, page.get_by_text("Memory: the full score matrix vs a tile"))
    screenshot(page, "09_memory.png")

    page.get_by_text("Share and export").click()  # opening it draws its contents
    with page.expect_download(timeout=90_000) as dl:
        button(page, "Figure (PNG)").click()
    path = dl.value.path()
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    exported = Image.open(path)
    shown = page.locator(TILEMAP).evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert exported.width >= shown[0] and exported.height > shown[1]  # the map under a title
    dl.value.save_as(ARTIFACTS / "10_exported_tile_map.png")
    with page.expect_download(timeout=30_000) as dl:
        button(page, "Trace (JSON)").click()
    assert dl.value.suggested_filename.endswith(".json")
    assert_no_exception(page)
