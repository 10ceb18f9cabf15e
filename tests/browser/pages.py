"""What the browser tests and the latency script do on the page, in one place."""
from __future__ import annotations

import io
import re
from urllib.parse import urlencode

from PIL import Image
from playwright.sync_api import Page, expect

from .server import ARTIFACTS

STEP_HEADING = re.compile(r"^Step (\d+) of (\d+):")
TILEMAP = ".st-key-tilemap img.tilemap"
# the step view's figures: images whose alt text names the step they show
STEP_FIGURES = ("tilemap", "step_tiles", "row_history", "output_rows")


def open_view(page: Page, url: str, **params) -> None:
    page.goto(f"{url}/?{urlencode(params)}" if params else url)
    wait_ready(page)


def wait_ready(page: Page, timeout: float = 90_000) -> None:
    """The step view is drawn: the tile map's image has loaded and decoded."""
    page.wait_for_function(
        f"() => {{ const img = document.querySelector('{TILEMAP}');"
        " return img && img.complete && img.naturalWidth > 0 && img.dataset.current; }",
        timeout=timeout)
    # the components above and beside the map have drawn (a slider that appears later
    # moves the map down), and one more frame for layout
    page.wait_for_function(
        "() => [['step_slider', 'input'], ['live_math', 'math']].every(([k, sel]) => {"
        " const box = document.querySelector(`.st-key-${k}`);"
        " return !box || box.querySelector(sel); })", timeout=timeout)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def figures_show_step(n: int) -> str:
    """A JS predicate: every step-view figure is a loaded image whose alt names step n
    (0-based n, as in the URL; the page counts from 1)."""
    keys = ",".join(f"'{k}'" for k in STEP_FIGURES)
    return (f"() => [{keys}].every(k => {{ const img = document.querySelector("
            f"`.st-key-${{k}} img`); return img && img.complete && img.naturalWidth > 0"
            f" && /step {n + 1}\\b/.test(img.alt); }})")


def current_step(page: Page) -> tuple[int, int]:
    """(n, last), 0-based as in the URL, from the step heading ("Step n + 1 of last + 1")."""
    text = page.locator("h4", has_text=STEP_HEADING).first.inner_text()
    m = STEP_HEADING.match(text)
    return int(m.group(1)) - 1, int(m.group(2)) - 1


def outlined_tile(page: Page) -> list[int] | None:
    """[i, j] of the tile the rendered map says it outlines (its ``data-current``)."""
    return page.evaluate(
        f"() => {{ const img = document.querySelector('{TILEMAP}');"
        " return img && img.dataset.current ? img.dataset.current.split(',').map(Number)"
        " : null; }")


def tile_rect(page: Page, i: int, j: int) -> tuple[float, float, float, float]:
    """Page coordinates (left, top, right, bottom) of tile (i, j) on the rendered map."""
    page.locator(TILEMAP).scroll_into_view_if_needed()
    return tuple(page.evaluate(
        f"([i, j]) => {{ const img = document.querySelector('{TILEMAP}');"
        " const r = img.getBoundingClientRect(), g = img.dataset.grid.split(',').map(Number);"
        " const tc = (g[2] - g[0]) / JSON.parse(img.dataset.tc),"
        "       tr = (g[3] - g[1]) / JSON.parse(img.dataset.tr);"
        " const x = f => r.left + f * r.width, y = f => r.top + f * r.height;"
        " return [x(g[0] + j * tc), y(g[1] + i * tr), x(g[0] + (j + 1) * tc),"
        "         y(g[1] + (i + 1) * tr)]; }",
        [i, j]))


def outline_color(page: Page, i: int, j: int) -> tuple[int, int, int]:
    """The colour the screen shows just inside the left edge of tile (i, j), halfway down:
    the outline's colour when that tile is outlined (read from a screenshot)."""
    x0, y0, _, y1 = tile_rect(page, i, j)
    png = page.screenshot(clip={"x": x0 + 1, "y": (y0 + y1) / 2, "width": 1, "height": 1})
    return Image.open(io.BytesIO(png)).convert("RGB").getpixel((0, 0))


def wait_for_step(page: Page, n: int, timeout: float = 30_000) -> None:
    """Step n (0-based) is shown: heading, URL, and every step-view figure redrawn for it."""
    expect(page.locator("h4", has_text=re.compile(rf"^Step {n + 1} of "))).to_be_visible(
        timeout=timeout)
    page.wait_for_url(re.compile(rf"[?&]step={n}(&|$)"), timeout=timeout)
    page.wait_for_function(figures_show_step(n), timeout=timeout)


def button(page: Page, label: str):
    return page.get_by_role("button", name=re.compile(rf"^\W*{re.escape(label)}"))


def tile_center(page: Page, i: int, j: int) -> tuple[float, float]:
    """Page coordinates of the centre of tile (i, j) on the rendered tile map."""
    x0, y0, x1, y1 = tile_rect(page, i, j)
    return (x0 + x1) / 2, (y0 + y1) / 2


def click_tile(page: Page, i: int, j: int) -> None:
    x, y = tile_center(page, i, j)
    page.mouse.click(x, y)


def assert_no_exception(page: Page) -> None:
    expect(page.locator('[data-testid="stException"]')).to_have_count(0)


def screenshot(page: Page, name: str) -> str:
    """Save the viewport (Streamlit scrolls an inner container: full_page would not help)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.wait_for_timeout(300)  # let the last images decode and paint
    page.screenshot(path=str(path))
    return str(path)


def scroll_to(page: Page, locator) -> None:
    """Scroll Streamlit's main container so that ``locator`` is at the top of the viewport."""
    locator.first.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
