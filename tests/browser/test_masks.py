"""The masks of real models in real headless Chromium: each new mask's tile map, its block
sparsity read back from the screen's pixels, the share of tiles computed, the presets loaded
from the sidebar and the sink logit typed into its box.

Screenshots: test-artifacts/masks_*.png (1280 x 1600 viewport); look at them after a change.
"""
import io
import re

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from attnviz.images import STATUS_COLOR
from attnviz.masks import tile_status
from attnviz.presets import PRESETS
from attnviz.viewconfig import to_query

from .pages import TILEMAP, assert_no_exception, open_view, screenshot, scroll_to, wait_ready

pytestmark = pytest.mark.browser
SKIPPED_RGB = np.array([int(STATUS_COLOR["skipped"][k:k + 2], 16) for k in (1, 3, 5)])

PRESET_SHOTS = {
    "StreamingLLM (sinks + window)": "masks_streamingllm.png",
    "three packed documents": "masks_packed_documents.png",
    "prefix-LM": "masks_prefix_lm.png",
    "gpt-oss sink logits": "masks_gpt_oss_sink_logits.png",
}


def expected_status(cfg) -> np.ndarray:
    kw = {k: v for k, v in cfg.mask_kwargs().items()
          if k not in ("sink_logits", "q_offset") and v is not None}
    return tile_status(cfg.Lq, cfg.Lk, cfg.Br, cfg.Bc, q_offset=cfg.Lk - cfg.Lq, **kw)


def skipped_on_screen(page: Page) -> np.ndarray:
    """Bool [Tr, Tc]: the tiles whose centre the screen paints in the skipped colour (the
    map as rendered, read from a screenshot of the image element)."""
    img = page.locator(TILEMAP)
    img.scroll_into_view_if_needed()
    grid = [float(x) for x in img.get_attribute("data-grid").split(",")]
    Tr, Tc = int(img.get_attribute("data-tr")), int(img.get_attribute("data-tc"))
    shot = np.asarray(Image.open(io.BytesIO(img.screenshot())).convert("RGB")).astype(int)
    H, W = shot.shape[:2]
    ys = ((grid[1] + (np.arange(Tr) + 0.5) / Tr * (grid[3] - grid[1])) * H).astype(int)
    xs = ((grid[0] + (np.arange(Tc) + 0.5) / Tc * (grid[2] - grid[0])) * W).astype(int)
    centre = shot[ys[:, None], xs[None, :]]  # [Tr, Tc, 3]
    return np.abs(centre - SKIPPED_RGB).max(axis=-1) <= 6


def share_text(status: np.ndarray) -> str:
    computed = int((status != "skipped").sum())
    return f"{computed} of {status.size} tiles computed ({100 * computed / status.size:.1f}%"


@pytest.mark.parametrize("name", list(PRESET_SHOTS))
def test_each_new_mask_tile_map(page: Page, app_url: str, name: str):
    cfg = PRESETS[name].config
    open_view(page, app_url, **to_query(cfg))
    assert_no_exception(page)
    status = expected_status(cfg)
    assert (skipped_on_screen(page) == (status == "skipped")).all()
    expect(page.get_by_text(share_text(status))).to_be_visible()
    scroll_to(page, page.get_by_text("Tile map"))
    screenshot(page, PRESET_SHOTS[name])


def test_presets_from_the_sidebar_and_a_typed_sink_logit(page: Page, app_url: str):
    open_view(page, app_url)
    page.locator(".st-key-preset").click()
    page.get_by_role("option", name="three packed documents").click()
    expect(page.get_by_text(re.compile(r"Loaded three packed documents"))).to_be_visible(
        timeout=60_000)
    page.wait_for_url(re.compile(r"[?&]mask=docs(&|$)"))
    wait_ready(page)
    status = expected_status(PRESETS["three packed documents"].config)
    expect(page.get_by_text(share_text(status))).to_be_visible()
    assert (skipped_on_screen(page) == (status == "skipped")).all()

    box = page.locator(".st-key-sink_logit input")
    box.fill("2")
    box.press("Enter")
    # a new trace is computed on this rerun: allow a busy machine's time
    expect(page.get_by_text("Every row starts from m = 2, l = 1, acc = 0")).to_be_visible(
        timeout=60_000)
    page.wait_for_url(re.compile(r"[?&]sink_logit=2\.0(&|$)"))
    wait_ready(page)
    assert_no_exception(page)
    screenshot(page, "masks_docs_with_sink_logit_sidebar.png")
