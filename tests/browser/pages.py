"""What the browser tests and the latency script do on the page, in one place."""
from __future__ import annotations

import re
from urllib.parse import urlencode

from playwright.sync_api import Page, expect

from .server import ARTIFACTS

STEP_HEADING = re.compile(r"^Step (\d+) of (\d+):")
TILEMAP = ".st-key-tilemap .js-plotly-plot"


def open_view(page: Page, url: str, **params) -> None:
    page.goto(f"{url}/?{urlencode(params)}" if params else url)
    wait_ready(page)


def wait_ready(page: Page, timeout: float = 90_000) -> None:
    """The step view is drawn: the tile map has rendered its tiles."""
    page.wait_for_function(
        f"() => {{ const gd = document.querySelector('{TILEMAP}');"
        " return gd && gd._fullLayout && gd.querySelector('.heatmaplayer image, .hm'); }",
        timeout=timeout)


def current_step(page: Page) -> tuple[int, int]:
    """(n, last) from the step heading."""
    text = page.locator("h4", has_text=STEP_HEADING).first.inner_text()
    m = STEP_HEADING.match(text)
    return int(m.group(1)), int(m.group(2))


def outlined_tile(page: Page) -> tuple[int, int] | None:
    """(i, j) of the tile the rendered map outlines."""
    return page.evaluate(
        f"() => {{ const gd = document.querySelector('{TILEMAP}');"
        " const s = gd && gd.layout.shapes.find(s => s.name === 'current');"
        " return s ? [Math.round((s.y0 + s.y1) / 2), Math.round((s.x0 + s.x1) / 2)] : null; }")


def wait_for_step(page: Page, n: int, timeout: float = 30_000) -> None:
    """Step n is shown: heading, URL, and the tile map redrawn with its outline."""
    expect(page.locator("h4", has_text=re.compile(rf"^Step {n} of "))).to_be_visible(
        timeout=timeout)
    page.wait_for_url(re.compile(rf"[?&]step={n}(&|$)"), timeout=timeout)


def button(page: Page, label: str):
    return page.get_by_role("button", name=re.compile(rf"^\W*{re.escape(label)}"))


def tile_center(page: Page, i: int, j: int) -> tuple[float, float]:
    """Page coordinates of the centre of tile (i, j) on the rendered tile map."""
    page.locator(TILEMAP).scroll_into_view_if_needed()
    return tuple(page.evaluate(
        f"([i, j]) => {{ const gd = document.querySelector('{TILEMAP}');"
        " const fl = gd._fullLayout, r = gd.getBoundingClientRect();"
        " return [r.left + fl.xaxis._offset + fl.xaxis.l2p(j),"
        " r.top + fl.yaxis._offset + fl.yaxis.l2p(i)]; }",
        [i, j]))


def click_tile(page: Page, i: int, j: int) -> None:
    x, y = tile_center(page, i, j)
    page.mouse.click(x, y)


def assert_no_exception(page: Page) -> None:
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def screenshot(page: Page, name: str) -> str:
    """Save the viewport (Streamlit scrolls an inner container: full_page would not help)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.wait_for_timeout(600)  # let Plotly finish its transitions
    page.screenshot(path=str(path))
    return str(path)


def scroll_to(page: Page, locator) -> None:
    """Scroll Streamlit's main container so that ``locator`` is at the top of the viewport."""
    locator.first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
