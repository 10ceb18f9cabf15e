"""Issue 11 in real headless Chromium: the "why it is exact" panel (prefill, decode, window),
the bug lab with each bug on, the quiz answered with the keyboard, and a random walk of the
new controls with no exception.

Screenshots: test-artifacts/why_*.png and bug_*.png (1280 x 1600 viewport); look at them
after a change.
"""
from __future__ import annotations

import random
import re

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from attnviz.bugs import BUGS
from attnviz.exactness import exactness
from attnviz.scenarios import one_head
from attnviz.stats import oracle
from attnviz.trace import run_trace
from attnviz.viewconfig import ViewConfig, clamp, to_query

from .pages import (
    assert_no_exception,
    button,
    current_step,
    open_view,
    screenshot,
    scroll_to,
    wait_for_step,
)

pytestmark = pytest.mark.browser

VIEWS = {
    "prefill": ViewConfig(L=96, Br=16, Bc=16),
    "decode": ViewConfig(mode="decode", cache=150, D=32, Br=1, Bc=32),
    "window": ViewConfig(mode="chunked", chunk=48, cache=80, Br=16, Bc=16, mask="window",
                         W=40),
}
# one view where every bug shows: a KV cache (top_left), a window (off by one); large
# logits for the overflows (the others show on random inputs too, but an off-by-one window
# does not: one more key weighs ~exp(-100) when the logits are that large)
BUG_VIEW = ViewConfig(mode="chunked", chunk=32, cache=64, Br=8, Bc=16, mask="window", W=40)
OVERFLOWS = ("no_max_carry", "no_max_subtraction")


def _trace(cfg: ViewConfig):
    q, k, v = one_head(cfg.scenario, cfg.Lq, cfg.Lk, cfg.D, seed=cfg.seed)
    return run_trace(q, k, v, q_block=cfg.Br, kv_block=cfg.Bc, bug=cfg.bug,
                     **cfg.mask_kwargs())


def toggle(page: Page, key: str) -> None:
    page.locator(f".st-key-{key} label").first.click()


def open_why(page: Page) -> None:
    toggle(page, "why_open")
    expect(page.locator(".st-key-why_math math").first).to_be_visible(timeout=30_000)
    expect(page.locator(".st-key-why_chart img").first).to_be_visible(timeout=30_000)


@pytest.mark.parametrize("name", list(VIEWS))
def test_why_panel(page: Page, app_url: str, name: str):
    cfg, _ = clamp(VIEWS[name].__dict__)
    trace = _trace(cfg)
    n = trace.block_done_after[trace.steps[-1].i]  # a last tile: both sums side by side
    open_view(page, app_url, **to_query(cfg, step=n, row=0))
    wait_for_step(page, n)
    open_why(page)
    r = trace.config.rows(trace.steps[n].i)[0]
    ex = exactness(trace, r, n)
    box = page.locator(".st-key-why_math")
    expect(box).to_contain_text(f"{ex.total:.6g}")
    expect(page.get_by_text(re.compile(r"Last tile of this row"))).to_be_visible()
    expect(page.locator(".st-key-why_chart img")).to_have_attribute(
        "alt", f"why it is exact: row {r} at step {n + 1}")
    rows = page.locator(".st-key-why_tiles tbody tr")
    expect(rows).to_have_count(len(ex.tiles))
    assert_no_exception(page)
    scroll_to(page, page.locator("h4", has_text="Why it is exact"))
    screenshot(page, f"why_{name}.png")


@pytest.mark.parametrize("bug", list(BUGS))
def test_each_bug(page: Page, app_url: str, bug: str):
    cfg, _ = clamp({**BUG_VIEW.__dict__, "bug": bug,
                    "scenario": "large_logits" if bug in OVERFLOWS else "random"})
    trace = _trace(cfg)
    O_ref = oracle(trace)[0]
    first = trace.first_departure(O_ref)
    assert first is not None, f"{bug} shows nothing in the bug view"
    i0, i1 = trace.config.rows(trace.steps[first].i)
    worst = int(np.argmax(trace.row_error(O_ref)[i0:i1]))  # the why panel shows this row
    open_view(page, app_url, **to_query(cfg, step=0, row=worst))
    banner = page.locator(".st-key-bug_banner")
    expect(banner).to_contain_text(f"Bug lab: {bug}")
    expect(banner).to_contain_text(f"First departure at step {first + 1}")
    button(page, f"Go to step {first + 1}").click()
    wait_for_step(page, first)
    open_why(page)
    assert_no_exception(page)
    scroll_to(page, banner)
    screenshot(page, f"bug_{bug}.png")
    scroll_to(page, page.locator("h4", has_text="Why it is exact"))  # the invariant, broken
    screenshot(page, f"bug_{bug}_why.png")
    button(page, "Back to the correct algorithm").click()
    expect(banner).to_have_count(0, timeout=30_000)
    page.wait_for_url(lambda u: "bug=" not in u)


def test_quiz_with_the_keyboard(page: Page, app_url: str):
    open_view(page, app_url, L=64, Br=16, Bc=16)
    toggle(page, "quiz_on")
    quiz = page.locator(".st-key-quiz_box")
    expect(quiz).to_contain_text("Score: 0 right of 0")
    page.locator(".st-key-quiz_box [role='radiogroup'] input").first.focus()
    page.keyboard.press("Space")  # choose the first option
    page.keyboard.press("Tab")
    expect(page.locator(".st-key-quiz_reveal button")).to_be_enabled()
    page.locator(".st-key-quiz_reveal button").focus()
    page.keyboard.press("Enter")
    expect(quiz).to_contain_text(re.compile(r"(Right|Not quite)"), timeout=30_000)
    expect(quiz).to_contain_text(re.compile(r"Score: [01] right of 1"))
    assert_no_exception(page)
    scroll_to(page, quiz)
    screenshot(page, "why_quiz.png")


def test_random_walk_of_the_new_controls(page: Page, app_url: str):
    rng = random.Random(11)
    open_view(page, app_url, L=64, Br=16, Bc=16)
    for _ in range(14):
        a = rng.choice(["why", "quiz", "next", "prev", "bug"])
        n, last = current_step(page)
        if a == "why":
            toggle(page, "why_open")
        elif a == "quiz":
            toggle(page, "quiz_on")
        elif a == "next" and n < last:
            button(page, "Next").click()
            wait_for_step(page, n + 1)
        elif a == "prev" and n > 0:
            button(page, "Prev").click()
            wait_for_step(page, n - 1)
        elif a == "bug":
            box = page.locator(".st-key-bug input")
            box.click()
            box.fill(rng.choice(list(BUGS)))
            page.keyboard.press("Enter")
            expect(page.locator(".st-key-bug_banner")).to_be_visible(timeout=30_000)
        page.wait_for_timeout(400)
        assert_no_exception(page)


# the learner's view (polish round): prefill L=128, 16 x 16 tiles
LEARNER = dict(mode="prefill", L=128, D=16, Br=16, Bc=16, B=1, Hq=8, Hkv=8, seed=0)
# every formula of a live math box ends inside the box (shrunk to fit, or scrollable)
_MATH_FITS = """key => { const f = document.querySelector(`.st-key-${key} .formulas`);
  const right = f.getBoundingClientRect().right;
  return [...f.querySelectorAll('math')].every(m => m.getBoundingClientRect().right <= right + 0.5)
    || f.scrollWidth > f.clientWidth; }"""
_MATH_CLIPPED = """key => { const f = document.querySelector(`.st-key-${key} .formulas`);
  const right = f.getBoundingClientRect().right;
  return [...f.querySelectorAll('math')].filter(m => m.getBoundingClientRect().right > right + 0.5)
    .length; }"""


def test_broken_invariant_is_written_neq(page: Page, app_url: str):
    """no_l_rescale: the identity's sides differ, so the page writes ≠, never = between them."""
    open_view(page, app_url, **LEARNER, mask="none", scenario="random", bug="no_l_rescale",
              step=3, row=1)
    open_why(page)
    box = page.locator(".st-key-why_math")
    expect(box.locator("mo", has_text="≠").first).to_be_visible()
    expect(box).to_contain_text("invariant broken")
    expect(box).to_contain_text("The invariant is broken")
    assert_no_exception(page)
    scroll_to(page, page.locator("h4", has_text="Why it is exact"))
    screenshot(page, "polish_neq.png")


def test_bug_row_history_and_live_math_fit(page: Page, app_url: str):
    """no_max_carry on large logits: the one-row caption says m falls, and the live math's
    long numbers (× 10^15) are not cut at the box's right edge."""
    open_view(page, app_url, **LEARNER, mask="none", scenario="large_logits",
              bug="no_max_carry", step=3, row=0)
    expect(page.get_by_text("This bug lets m fall")).to_be_visible()
    assert page.evaluate(_MATH_CLIPPED, "live_math") == 0
    assert page.evaluate(_MATH_FITS, "live_math")
    assert_no_exception(page)
    scroll_to(page, page.locator("h4", has_text="One row, step by step"))
    screenshot(page, "polish_bug_row.png")


def test_overflow_bug_offers_large_logits(page: Page, app_url: str):
    open_view(page, app_url, **LEARNER, mask="causal", scenario="random", bug="no_max_carry",
              step=0)
    banner = page.locator(".st-key-bug_banner")
    expect(banner).to_contain_text("still agrees with the float64 oracle")
    expect(banner).to_contain_text("Error of each query row's final output")
    scroll_to(page, banner)
    screenshot(page, "polish_bug_offer.png")
    button(page, "Show it on large logits").click()
    expect(banner).to_contain_text("First departure at step", timeout=60_000)
    page.wait_for_url(lambda u: "scenario=large_logits" in u and "bug=no_max_carry" in u)
    assert_no_exception(page)
    scroll_to(page, banner)
    screenshot(page, "polish_bug_large.png")


def test_decode_one_row_tiles(page: Page, app_url: str):
    open_view(page, app_url, mode="decode", cache=192, D=16, Br=16, Bc=16, mask="window", W=64)
    img = page.locator(".st-key-step_tiles img").first
    expect(img).to_be_visible()
    assert img.bounding_box()["height"] >= 150  # 96 px tiles + title and axes, not a strip
    assert_no_exception(page)
    scroll_to(page, page.locator("h4", has_text="Step 1 of"))
    screenshot(page, "polish_decode.png")
