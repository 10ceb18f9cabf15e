"""The timing panel in real headless Chromium: a busy machine is named beside the numbers,
an over-budget configuration is refused within a second, stepping works while an L sweep
runs, and the sweep's roofline is drawn. Screenshots go to test-artifacts/.
"""
import re
import subprocess
import sys
import time

import pytest
from playwright.sync_api import Page, expect

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
BURN_S = 90  # each CPU burner stops by itself after this, if the test does not end it first


def _open_timing(page: Page) -> None:
    page.get_by_role("tab", name="Timing").click()
    expect(button(page, "Time standard vs streaming")).to_be_visible(timeout=30_000)


def _burners(n: int) -> list[subprocess.Popen]:
    code = f"import time\nend = time.time() + {BURN_S}\nwhile time.time() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def test_two_cpu_burners_are_named_beside_the_numbers(page: Page, app_url: str):
    open_view(page, app_url)
    _open_timing(page)
    burners = _burners(2)
    try:
        time.sleep(1.0)  # both are spinning before the measurement starts
        button(page, "Time standard vs streaming").click()
        notice = page.get_by_text(re.compile(r"^Busy machine: other processes used \d\.\d\d of "
                                             r"this machine's \d+ cores while measuring"))
        expect(notice).to_be_visible(timeout=180_000)
    finally:
        for p in burners:
            p.kill()
            p.wait()
    expect(page.get_by_text(re.compile(r"^max \|O_standard − O_streaming\|"))).to_be_visible()
    scroll_to(page, page.get_by_text("Timing: the same Numba kernels, live"))
    screenshot(page, "11_timing_busy_machine.png")
    assert_no_exception(page)


def test_an_over_budget_configuration_is_refused_within_a_second(page: Page, app_url: str):
    open_view(page, app_url, L=4096, B=16, Hq=64, Hkv=8, D=128)
    _open_timing(page)
    expect(page.get_by_text(re.compile(r"^This configuration is over the timing budget"))
           ).to_be_visible(timeout=10_000)
    idle = page.locator('[data-testid="stStatusWidget"]')
    expect(idle).to_have_count(0, timeout=60_000)
    # a reference round trip on this page: one step click (the bug took 13-17 s)
    t0 = time.perf_counter()
    button(page, "Next").click()
    wait_for_step(page, 1)
    step_s = time.perf_counter() - t0
    expect(idle).to_have_count(0, timeout=60_000)
    t0 = time.perf_counter()
    button(page, "Time standard vs streaming").click()
    refused = page.get_by_text(re.compile(r"^Not timed: inputs and output need [\d.]+ GiB"))
    expect(refused).to_be_visible(timeout=5_000)
    refuse_s = time.perf_counter() - t0
    print(f"refused after {refuse_s:.2f} s; a step click took {step_s:.2f} s")
    # within 1 s, or (on a machine so loaded that any round trip takes longer) no slower
    # than a step click: no input is built either way
    assert refuse_s < 1.0 or refuse_s < step_s, (refuse_s, step_s)
    scroll_to(page, page.get_by_text("Timing: the same Numba kernels, live"))
    screenshot(page, "12_timing_over_budget.png")
    assert_no_exception(page)


def test_next_steps_while_an_L_sweep_runs_then_the_roofline(page: Page, app_url: str):
    open_view(page, app_url)
    _open_timing(page)
    t0 = time.perf_counter()
    button(page, "Next").click()
    wait_for_step(page, 1)
    print(f"step 1 with no sweep running after {time.perf_counter() - t0:.2f} s")
    button(page, "Run the sweep").click()  # up to L = 4096: tens of seconds on 1 thread
    progress = page.locator('[data-testid="stProgress"]')
    expect(progress).to_be_visible(timeout=60_000)
    n0 = current_step(page)[0]
    for k in (1, 2):
        t0 = time.perf_counter()
        button(page, "Next").click()
        wait_for_step(page, n0 + k, timeout=10_000)
        print(f"step {n0 + k} during the sweep after {time.perf_counter() - t0:.2f} s")
    expect(progress).to_be_visible()  # the sweep was still running all along
    button(page, "Cancel").click()
    expect(page.get_by_text(re.compile(r"^Sweep over L cancelled"))).to_be_visible(
        timeout=60_000)

    # a complete small sweep (L = 256, 512, 1024): the crossover, the roofline, the sentence
    page.locator(".st-key-sweep_Lmax input[type=range]").focus()
    for _ in range(2):
        page.keyboard.press("ArrowLeft")
    expect(page.locator(".st-key-sweep_Lmax [data-testid=stSliderThumbValue]")).to_have_text(
        "1024")
    button(page, "Run the sweep").click()
    expect(page.get_by_text(re.compile(r"^Why: At L = ")).first).to_be_visible(timeout=180_000)
    # the sweep has ended (its progress bar is gone); the last rerun can leave the previous
    # draw's chart beside the new one for a moment
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(0, timeout=180_000)
    expect(page.locator('[data-testid="stStatusWidget"]')).to_have_count(0, timeout=60_000)
    for key in ("roofline_chart", "crossover_chart"):
        chart = page.locator(f".st-key-{key} .js-plotly-plot")
        expect(chart).to_have_count(1, timeout=60_000)
        expect(chart).to_be_visible(timeout=60_000)
    scroll_to(page, page.get_by_text("Sweep over L: where does streaming overtake"))
    screenshot(page, "13_timing_roofline.png")
    assert_no_exception(page)


def test_timing_table_names_the_timed_blocks_and_the_sweep_legend_what_it_saw(
        page: Page, app_url: str):
    # the learner's view: the model column once read as the Memory tab's (sidebar 16 x 16)
    open_view(page, app_url, mask="causal")
    _open_timing(page)
    button(page, "Time standard vs streaming").click()
    expect(page.get_by_text(re.compile(r"^max \|O_standard − O_streaming\|"))).to_be_visible(
        timeout=180_000)
    expect(page.get_by_text("memory model (the call as timed)")).to_be_visible()
    expect(page.get_by_text(re.compile(r"The model column is the Memory tab's formula for the "
                                       r"call as timed: streaming blocks \d+ x \d+"))
           ).to_be_visible()
    scroll_to(page, page.get_by_text("Timing: the same Numba kernels, live"))
    screenshot(page, "14_timing_model_column.png")
    # a small sweep (L = 256, 512, 1024): its legend claims a crossover only between two
    # measured points where the winner changes
    page.locator(".st-key-sweep_Lmax input[type=range]").focus()
    for _ in range(2):
        page.keyboard.press("ArrowLeft")
    expect(page.locator(".st-key-sweep_Lmax [data-testid=stSliderThumbValue]")).to_have_text(
        "1024")
    button(page, "Run the sweep").click()
    expect(page.get_by_text(re.compile(r"^Why: At L = ")).first).to_be_visible(timeout=180_000)
    expect(page.locator('[data-testid="stProgress"]')).to_have_count(0, timeout=180_000)
    chart = page.locator(".st-key-crossover_chart .js-plotly-plot")
    expect(chart).to_have_count(1, timeout=60_000)
    legend = chart.locator(".legend").text_content()
    assert "crossover: streaming faster from L = 256" not in legend, legend
    scroll_to(page, page.get_by_text("Sweep over L: where does streaming overtake"))
    screenshot(page, "15_timing_sweep_legend.png")
    assert_no_exception(page)
