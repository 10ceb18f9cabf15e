"""Measure what a user feels (a script, not a test: times are reported, never asserted).

    .venv/bin/python -m tests.browser.latency

Starts its own server, warms it with one page load, then reports
* first load on a warmed server: navigation until the tile map's image has loaded, in a
  fresh browser profile (every script chunk downloaded and compiled) and reloaded in the
  same profile (browser cache warm); also until every figure of the page has loaded;
* step click: "Next" until the new step's heading and URL are shown and every figure of the
  step view (tile map, S/P~ tiles, row history, output rows) is a loaded image of the new
  step, for L = 1024 with the kernel's default blocks for D = 64, the seed engine's 32 x 64
  blocks, and the first-look preset. Timed twice: in the page (``performance.now()`` from
  the button's ``click()`` until the next animation frame after the condition holds: what a
  user feels), and from Playwright (its click's actionability checks and CDP round trips,
  ~40 ms here, included).

``--panels``: each step-click configuration is measured twice in the same run, with the
step view's optional panels closed and then open (the "why it is exact" panel with its
figure, and the quiz): a click then also waits for the why panel's heading of the new step
and its figure, loaded. ``--no-first-load`` skips the first-load measurements.
"""
from __future__ import annotations

import argparse
import statistics
import time

from playwright.sync_api import sync_playwright

from kernels import default_blocks

from .pages import (
    STEP_FIGURES,
    button,
    current_step,
    figures_show_step,
    open_view,
    outlined_tile,
    wait_ready,
)
from .server import CHROMIUM, CHROMIUM_ARGS, VIEWPORT, streamlit_server

ALL_FIGURES = (*STEP_FIGURES, "memory_chart")


def _all_drawn(page) -> None:
    keys = ",".join(f"'{k}'" for k in ALL_FIGURES)
    page.wait_for_function(
        f"() => [{keys}].every(k => {{ const img = document.querySelector(`.st-key-${{k}} img`);"
        " return img && img.complete && img.naturalWidth > 0; })", timeout=90_000)


def _first_loads(browser, url: str, n: int = 3) -> dict[str, list[float]]:
    """Fresh browser profile and the same profile reloaded: until the tile map has loaded,
    and (fresh) until every figure on the page has."""
    times: dict[str, list[float]] = {"fresh": [], "fresh, all figures": [], "reload": []}
    for _ in range(n):
        ctx = browser.new_context(viewport=VIEWPORT)
        page = ctx.new_page()
        t0 = time.perf_counter()
        page.goto(url)
        wait_ready(page)
        times["fresh"].append(time.perf_counter() - t0)
        _all_drawn(page)
        times["fresh, all figures"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        page.reload()
        wait_ready(page)
        times["reload"].append(time.perf_counter() - t0)
        ctx.close()
    return times


PANELS = ("why_open", "quiz_on")  # the step view's optional panels (toggles)


def _step_shown(n: int, panels: bool = False) -> str:
    """A JS predicate: step n's heading, URL and every figure are on the page (n 0-based,
    as in the URL; the heading counts from 1); with ``panels``, also the why panel's heading
    of step n and its figure, loaded."""
    why = (f"""&& [...document.querySelectorAll('h4')].some(
            e => e.innerText.startsWith('Why it is exact') && e.innerText.endsWith('step {n + 1}'))
        && (() => {{ const img = document.querySelector('.st-key-why_chart img');
            return img && img.complete && img.naturalWidth > 0
                && img.alt.endsWith('step {n + 1}'); }})()"""
           if panels else "")
    return f"""() => {{
        const h = [...document.querySelectorAll('h4')].find(
            e => e.innerText.startsWith('Step {n + 1} of '));
        return h && location.search.includes('step={n}&') && ({figures_show_step(n)})() {why};
    }}"""


def _open_panels(page) -> None:
    for key in PANELS:
        page.locator(f".st-key-{key} label").first.click()
        page.wait_for_timeout(500)
    n, _ = current_step(page)
    page.wait_for_function(_step_shown(n, True), timeout=90_000)


# In the page: click "Next", poll once per frame until the step is shown, then wait for the
# frame that paints it; milliseconds.
_IN_PAGE_CLICK = """async (shownSrc) => {
  const shown = eval(shownSrc);
  const next = document.querySelector('.st-key-next button');
  const t0 = performance.now();
  next.click();
  await new Promise(done => { const f = () => shown() ? done() : requestAnimationFrame(f); f(); });
  await new Promise(done => requestAnimationFrame(() => done()));
  return performance.now() - t0;
}"""


def _step_clicks(page, clicks: int = 10, panels: bool = False) -> dict[str, list[float]]:
    """Alternately timed in the page and from Playwright (seconds)."""
    times: dict[str, list[float]] = {"in page": [], "Playwright": []}
    for k in range(2 * clicks):
        n, _ = current_step(page)
        if k % 2 == 0:
            times["in page"].append(
                page.evaluate(_IN_PAGE_CLICK, _step_shown(n + 1, panels)) / 1e3)
        else:
            t0 = time.perf_counter()
            button(page, "Next").click()
            page.wait_for_function(_step_shown(n + 1, panels), timeout=30_000)
            times["Playwright"].append(time.perf_counter() - t0)
        page.wait_for_timeout(300)  # a user's pace, and the rerun's tail is over
    return times


def _summary(name: str, xs: list[float]) -> str:
    p90 = statistics.quantiles(xs, n=10, method="inclusive")[-1] if len(xs) > 1 else xs[0]
    return (f"{name}: median {statistics.median(xs):.3f} s, p90 {p90:.3f} s, "
            f"min {min(xs):.3f} s, max {max(xs):.3f} s over {len(xs)}")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.browser.latency",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--panels", action="store_true",
                    help="also time each step click with the why panel and the quiz open")
    ap.add_argument("--no-first-load", action="store_true",
                    help="skip the first-load measurements")
    args = ap.parse_args()
    Br, Bc = default_blocks(64)
    with streamlit_server() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        _first_loads(browser, url, 1)  # warm the server: kernels, trace cache
        if not args.no_first_load:
            loads = _first_loads(browser, url)
            print(_summary("first load (warmed server, fresh browser profile)", loads["fresh"]))
            print(_summary("first load, every figure of the page", loads["fresh, all figures"]))
            print(_summary("reload (warmed server, browser cache warm)", loads["reload"]))
        page = browser.new_page(viewport=VIEWPORT)
        for label, params in (
                (f"step click, L=1024 D=64 blocks {Br}x{Bc}",
                 dict(L=1024, D=64, Br=Br, Bc=Bc)),
                ("step click, L=1024 D=64 blocks 32x64 (seed engine)",
                 dict(L=1024, D=64, Br=32, Bc=64)),
                ("step click, first look (L=128, 16x16)", {})):
            for panels in (False, True) if args.panels else (False,):
                open_view(page, url, **params)
                _all_drawn(page)  # the first render of the page is done before the clicks
                page.wait_for_timeout(1_000)
                assert outlined_tile(page) is not None
                if panels:
                    _open_panels(page)
                    page.wait_for_timeout(1_000)
                shown = ", why panel + quiz open" if panels else ""
                for how, xs in _step_clicks(page, panels=panels).items():
                    print(_summary(f"{label}{shown} ({how})", xs), flush=True)
        browser.close()


if __name__ == "__main__":
    main()
