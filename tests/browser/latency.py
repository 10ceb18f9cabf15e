"""Measure what a user feels (a script, not a test: times are reported, never asserted).

    .venv/bin/python -m tests.browser.latency

Starts its own server, warms it with one page load, then reports
* first load on a warmed server: navigation until the tile map has drawn its tiles, in a
  fresh browser profile (every script chunk, Plotly's 4.7 MB among them, downloaded and
  compiled) and reloaded in the same profile (browser cache warm);
* step click: "Next" until the new step's heading, URL and tile-map outline are shown,
  for L = 1024 with the kernel's default blocks for D = 64 and for the first-look preset.
"""
from __future__ import annotations

import statistics
import time

from playwright.sync_api import sync_playwright

from kernels import default_blocks

from .pages import TILEMAP, button, current_step, open_view, outlined_tile, wait_ready
from .server import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, streamlit_server

ALL_CHARTS = 5  # tile map, S/P tiles, row history, output rows, memory


def _all_drawn(page) -> None:
    page.wait_for_function(
        f"() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= {ALL_CHARTS}",
        timeout=90_000)


def _first_loads(browser, url: str, n: int = 3) -> tuple[list[float], list[float]]:
    """(fresh browser profile, same profile reloaded): until the tile map has drawn."""
    fresh, reload = [], []
    for _ in range(n):
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(url)
        wait_ready(page)
        fresh.append(time.perf_counter() - t0)
        _all_drawn(page)
        t0 = time.perf_counter()
        page.reload()
        wait_ready(page)
        reload.append(time.perf_counter() - t0)
        ctx.close()
    return fresh, reload


def _step_clicks(page, clicks: int = 10) -> list[float]:
    times = []
    for _ in range(clicks):
        n, _ = current_step(page)
        t0 = time.perf_counter()
        button(page, "Next").click()
        page.wait_for_function(
            f"""() => {{
                const h = [...document.querySelectorAll('h4')].find(
                    e => e.innerText.startsWith('Step {n + 1} of '));
                const gd = document.querySelector('{TILEMAP}');
                return h && location.search.includes('step={n + 1}&') && gd && gd.layout;
            }}""", timeout=30_000)
        times.append(time.perf_counter() - t0)
    return times


def _summary(name: str, xs: list[float]) -> str:
    return (f"{name}: median {statistics.median(xs):.3f} s, min {min(xs):.3f} s, "
            f"max {max(xs):.3f} s over {len(xs)}")


def main() -> None:
    Br, Bc = default_blocks(64)
    with streamlit_server() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        _first_loads(browser, url, 1)  # warm the server: kernels, trace cache
        fresh, reload = _first_loads(browser, url)
        print(_summary("first load (warmed server, fresh browser profile)", fresh))
        print(_summary("reload (warmed server, browser cache warm)", reload))
        page = browser.new_page(viewport=VIEWPORT)
        for label, params in (
                (f"step click, L=1024 D=64 blocks {Br}x{Bc}",
                 dict(L=1024, D=64, Br=Br, Bc=Bc)),
                ("step click, L=1024 D=64 blocks 32x64 (seed engine)",
                 dict(L=1024, D=64, Br=32, Bc=64)),
                ("step click, first look (L=128, 16x16)", {})):
            open_view(page, url, **params)
            _all_drawn(page)  # the first render of the page is done before the clicks
            page.wait_for_timeout(1_000)
            assert outlined_tile(page) is not None
            print(_summary(label, _step_clicks(page)))
        browser.close()


if __name__ == "__main__":
    main()
