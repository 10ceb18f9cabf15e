"""A class on one server: N real browser sessions stepping at once (a script, not a test:
what it measures is reported, never asserted).

    .venv/bin/python -m tests.browser.load --sessions 1 5 10 20 --clicks 6
    .venv/bin/python -m tests.browser.load --url http://teacher-host:8501   # a class's server

Starts its own server (``server.streamlit_server``; or measures the one at ``--url``, whose
memory and CPU it then cannot see), warms it with one page load, then for
each N: one headless Chromium with N browser contexts (N separate Streamlit sessions, each
on its own websocket, as N students' browsers would be), opened a ``--ramp`` apart. Each
session loads a preset from the sidebar (session s starts at preset s), clicks "Next"
``--clicks`` times with a think time of ``--think`` s (±50%) between clicks, then loads the
next preset and clicks again, for ``--presets`` presets. Sessions on the same preset walk the
same steps, as a class following its teacher would.

Reported per N:
* step click: "Next" until the new step's heading and URL are shown and every figure of the
  step view is a loaded image of that step, timed in the page (as in ``latency.py``):
  p50 and p95 over every click of every session;
* first load (navigation until the step view is drawn) and preset load (choosing a preset
  until its step 0 is drawn), p50 and p95;
* the server's resident memory (its process tree, sampled every 0.2 s): at the start of the
  level and its peak; the server's CPU seconds per step click; the cores other processes
  (the browser, other jobs) used meanwhile;
* errors: exceptions shown in a page, JavaScript errors, failed requests, loads and clicks
  that timed out.
The last session of each level saves what it sees at its end as
``test-artifacts/load_N<N>.png``.

The browser runs on the same 2 cores as the server, so with many sessions it competes with
the server: the latencies are an upper bound for a class whose browsers run on their own
machines. Every level is bounded in time (``--budget`` s); clicks not made by then are
reported as not made.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil
from playwright.async_api import Page, async_playwright

from attnviz.bench.machine import cpu_snapshot, other_cores
from attnviz.presets import PRESETS
from attnviz.viewconfig import to_query

from .latency import _IN_PAGE_CLICK, _step_shown
from .pages import TILEMAP
from .server import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, VIEWPORT, streamlit_server

_READY = (f"() => {{ const img = document.querySelector('{TILEMAP}');"
          " return img && img.complete && img.naturalWidth > 0 && img.dataset.current; }")
_LOAD_TIMEOUT, _CLICK_TIMEOUT = 120.0, 30.0  # seconds


def _shows_view(params: dict[str, str]) -> str:
    """A JS predicate: the URL holds these parameters and the step view is drawn."""
    return f"""() => {{
        const want = {json.dumps(params)}, got = new URLSearchParams(location.search);
        return Object.entries(want).every(([k, v]) => got.get(k) === v) && ({_READY})();
    }}"""


@dataclass
class Level:
    """What the sessions of one N measured (seconds)."""
    n: int
    clicks: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    presets: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    not_made: int = 0  # clicks left when the time budget ran out
    rss_start: int | None = None  # None: a server elsewhere (--url), not measured
    rss_peak: int | None = None
    server_cpu: float | None = None
    others: float | None = None
    wall: float = 0.0


class ServerWatch:
    """Samples the resident memory of the server's process tree in a thread."""

    def __init__(self, port: int, every: float = 0.2):
        self.proc = next(p for p in psutil.Process().children(recursive=True)
                         if "streamlit" in " ".join(p.cmdline()) and str(port) in p.cmdline())
        self.every, self.peak = every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def tree(self) -> list[psutil.Process]:
        return [self.proc, *self.proc.children(recursive=True)]

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self.rss())

    def reset_peak(self) -> int:
        self.peak = self.rss()
        return self.peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _quantile(xs: list[float], q: float) -> float | None:
    """The q-quantile of xs (nearest rank), None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def _ms(xs: list[float], q: float) -> str:
    x = _quantile(xs, q)
    return "-" if x is None else f"{1e3 * x:.0f}"


def _s(xs: list[float]) -> str:
    """p50 / p95 in seconds."""
    a, b = _quantile(xs, 0.5), _quantile(xs, 0.95)
    return "-" if a is None else f"{a:.1f} / {b:.1f}"


async def _choose_preset(page: Page, name: str) -> None:
    # a starved renderer can take long to call the sidebar stable: as long as a first load
    await page.locator(".st-key-preset").click(timeout=1e3 * _LOAD_TIMEOUT)
    await page.get_by_role("option", name=name, exact=True).click(timeout=1e3 * _LOAD_TIMEOUT)


async def _session(s: int, browser, url: str, args, level: Level, deadline: float) -> None:
    rng = random.Random(s)
    names = list(PRESETS)
    await asyncio.sleep(s * args.ramp)
    ctx = await browser.new_context(viewport=VIEWPORT)
    page = await ctx.new_page()
    page.on("pageerror", lambda e: level.errors.append(f"session {s}: JS error: {e}"))
    page.on("requestfailed", lambda r: level.errors.append(
        f"session {s}: request failed: {r.url[:80]} {r.failure}"))
    todo = args.presets * args.clicks  # clicks not made yet
    phase = "first load"
    try:
        t0 = time.perf_counter()
        await page.goto(url, timeout=1e3 * _LOAD_TIMEOUT)
        await page.wait_for_function(_READY, timeout=1e3 * _LOAD_TIMEOUT)
        level.loads.append(time.perf_counter() - t0)
        for p in range(args.presets):
            name = names[(s + p + 1) % len(names)]  # the first load shows names[0]
            cfg = PRESETS[name].config
            phase = f"loading preset {name!r}"
            t0 = time.perf_counter()
            await _choose_preset(page, name)
            await page.wait_for_function(_shows_view(to_query(cfg, step=0)),
                                         timeout=1e3 * _LOAD_TIMEOUT)
            level.presets.append(time.perf_counter() - t0)
            for n in range(args.clicks):
                if time.monotonic() > deadline:
                    return
                phase = f"step {n + 1} of {name!r}"
                last = await page.locator(".st-key-next button").is_disabled()
                if last:  # this preset has fewer steps than clicks
                    todo -= args.clicks - n
                    break
                await asyncio.sleep(args.think * rng.uniform(0.5, 1.5))
                try:
                    ms = await asyncio.wait_for(
                        page.evaluate(_IN_PAGE_CLICK, _step_shown(n + 1)), _CLICK_TIMEOUT)
                    level.clicks.append(ms / 1e3)
                except asyncio.TimeoutError:
                    level.errors.append(f"session {s}: step {n + 1} of {name!r} not shown "
                                        f"within {_CLICK_TIMEOUT:.0f} s")
                    break
                todo -= 1
            shown = await page.locator('[data-testid="stException"]').count()
            if shown:
                level.errors.append(f"session {s}: {shown} exception(s) shown with {name!r}")
    except Exception as e:  # a failed load or a closed page: counted, the others go on
        level.errors.append(f"session {s}, {phase}: {type(e).__name__}: "
                            f"{str(e).splitlines()[0]}")
    finally:
        level.not_made += todo
        if s == level.n - 1:  # the last session to arrive, as it sees the page at its end
            try:
                await page.screenshot(path=str(ARTIFACTS / f"load_N{level.n}.png"))
            except Exception as e:  # the screenshot is a by-product: never an error here
                print(f"no screenshot for N={level.n}: {type(e).__name__}", flush=True)
        await ctx.close()


async def _level(browser, url: str, n: int, args, watch: ServerWatch | None) -> Level:
    level = Level(n)
    if watch:
        level.rss_start, cpu0 = watch.reset_peak(), watch.cpu()
    snap0, t0 = cpu_snapshot(), time.perf_counter()
    deadline = time.monotonic() + args.budget
    tasks = [asyncio.create_task(_session(s, browser, url, args, level, deadline))
             for s in range(n)]
    done, pending = await asyncio.wait(tasks, timeout=args.budget + _LOAD_TIMEOUT)
    for t in pending:
        t.cancel()
        level.errors.append("a session did not finish within the time budget")
    await asyncio.gather(*pending, return_exceptions=True)
    level.wall = time.perf_counter() - t0
    level.others = other_cores(snap0, cpu_snapshot())  # the server, browsers, other jobs
    if watch:
        level.server_cpu = watch.cpu() - cpu0
        level.rss_peak = max(watch.peak, watch.rss())
    return level


def _print(levels: list[Level], args) -> None:
    print(f"\n{'N':>3} {'clicks':>6} {'p50 ms':>7} {'p95 ms':>7} {'load p50/p95 s':>15} "
          f"{'preset p50/p95 s':>17} {'RSS MiB start/peak':>19} {'server CPU s (%)':>17} "
          f"{'busy cores':>10} {'errors':>6} {'wall s':>6}")
    for lv in levels:
        rss = ("-" if lv.rss_peak is None
               else f"{lv.rss_start / 2**20:.0f} / {lv.rss_peak / 2**20:.0f}")
        cpu = ("-" if lv.server_cpu is None
               else f"{lv.server_cpu:.1f} ({100 * lv.server_cpu / lv.wall:.0f}%)")
        busy = "-" if lv.others is None else f"{lv.others:.2f}"
        print(f"{lv.n:>3} {len(lv.clicks):>6} {_ms(lv.clicks, .5):>7} {_ms(lv.clicks, .95):>7} "
              f"{_s(lv.loads):>15} {_s(lv.presets):>17} {rss:>19} {cpu:>17} {busy:>10} "
              f"{len(lv.errors):>6} {lv.wall:>6.0f}")
    for lv in levels:  # every error, grouped by kind (the session's number left out)
        kinds = Counter(re.sub(r"^session \d+[,:] ", "", e) for e in lv.errors)
        for kind, count in kinds.most_common():
            print(f"  N={lv.n}: {count} x {kind}")
    print(f"\nclicks per session: {args.presets} presets x {args.clicks}; think time "
          f"{args.think} s (±50%); sessions opened {args.ramp} s apart; budget "
          f"{args.budget:.0f} s per level; clicks not made: "
          + ", ".join(f"N={lv.n}: {lv.not_made}" for lv in levels)
          + ".\nserver CPU: all the server's work during the level (% of one core); busy "
            "cores: the machine's cores busy with anything but this script (server, browsers, "
            "other jobs), of " + str(psutil.cpu_count()))


@contextmanager
def _server(url: str | None):
    """(url, ServerWatch) of our own server, or (url, None) for one elsewhere."""
    if url:
        yield url.rstrip("/"), None
        return
    with streamlit_server() as own:
        watch = ServerWatch(int(own.rsplit(":", 1)[1]))
        try:
            yield own, watch
        finally:
            watch.close()


async def _main(args) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    levels = []
    with _server(args.url) as (url, watch):
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            warm = Level(0)
            await _session(0, browser, url, argparse.Namespace(
                **{**vars(args), "presets": 1, "clicks": 1}), warm, time.monotonic() + 120)
            print(f"server warmed: first load {_s(warm.loads)} s, errors: "
                  f"{warm.errors or 'none'}"
                  + (f"; RSS {watch.rss() / 2**20:.0f} MiB" if watch else ""), flush=True)
            for n in args.sessions:
                lv = await _level(browser, url, n, args, watch)
                levels.append(lv)
                print(f"N={n}: {len(lv.clicks)} clicks, p50 {_ms(lv.clicks, .5)} ms, "
                      f"p95 {_ms(lv.clicks, .95)} ms, {len(lv.errors)} errors", flush=True)
            await browser.close()
    _print(levels, args)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 5, 10, 20],
                    help="the N to run, one level each (default: 1 5 10 20)")
    ap.add_argument("--clicks", type=int, default=6, help="Next clicks per preset (default 6)")
    ap.add_argument("--presets", type=int, default=2,
                    help="presets each session loads and steps through (default 2)")
    ap.add_argument("--think", type=float, default=1.0,
                    help="seconds between a session's clicks, ±50%% (default 1.0)")
    ap.add_argument("--ramp", type=float, default=1.0,
                    help="seconds between two sessions' first loads (default 1.0)")
    ap.add_argument("--url", help="measure the server at this address (started elsewhere, "
                    "e.g. the class's; its memory and CPU are then not measured) instead "
                    "of starting one here")
    ap.add_argument("--budget", type=float, default=300.0,
                    help="seconds each level may take; clicks not made by then are "
                         "reported (default 300)")
    args = ap.parse_args(argv)
    for name in ("sessions", "clicks", "presets"):
        values = args.sessions if name == "sessions" else [getattr(args, name)]
        if any(v < 1 for v in values):
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.think < 0 or args.ramp < 0 or args.budget <= 0:
        ap.error("--think and --ramp must be >= 0 and --budget > 0")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
