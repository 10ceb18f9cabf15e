"""What the app shows, as one frozen value, and the bounds that keep every choice safe.

``ViewConfig`` holds the raw control values (mode, sizes, blocks, mask, heads, scenario,
seed); its properties derive what the kernels take (``Lq``, ``Lk``, ``q_offset``,
``window``). ``clamp`` turns any dict of raw values -- from widgets or from a URL -- into a
valid ViewConfig plus one plain-English notice per value it had to change, so no
combination can crash the app or exhaust memory:

* the traced head has ``Lq, Lk <= MAX_TRACE_LEN`` (a trace keeps per-row numbers for every
  tile, and the oracle needs a row chunk of the score matrix in float64);
* the tile grid has ``Tr, Tc <= MAX_GRID`` and ``Tr * Tc <= MAX_TILES`` (blocks are raised
  until it fits: the tile map stays readable and the trace small);
* ``Hkv`` divides ``Hq`` (each KV head serves a whole group of query heads);
* the masks of real models stay within the keys: ``sinks``, ``prefix`` and ``docs`` <= Lk;
* ``bug`` is None (the real algorithm) or a name of ``attnviz.bugs.BUGS`` (the bug lab).

The URL carries the same keys as strings (``to_query`` / ``from_query``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from kernels.tile import cdiv

from .bugs import BUGS
from .masks import packed_doc_ids
from .scenarios import SCENARIOS

MODES = {
    "prefill": "prefill (Lq = Lk)",
    "chunked": "chunked prefill (KV cache + new chunk)",
    "decode": "decode (one new token)",
}
MASKS = {"causal": "causal", "window": "sliding window", "none": "none (full attention)",
         "sinks": "sinks + window (StreamingLLM)", "docs": "packed documents",
         "prefix": "prefix-LM"}
ALIGNS = {
    "bottom-right": "bottom-right (FlashAttention >= 2.1, KV cache)",
    "top-left": "top-left (PyTorch is_causal)",
}
D_OPTIONS = (4, 8, 16, 32, 64, 96, 128, 256)
BLOCK_OPTIONS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256)

MAX_TRACE_LEN = 4096  # Lq and Lk of the traced head
MAX_GRID = 128  # Tr and Tc each
MAX_TILES = 8192  # Tr * Tc
MAX_B, MAX_H, MAX_SEED = 16, 64, 2**31 - 1
MAX_DOCS = 64  # packed documents
MAX_SINK_LOGIT = 30.0  # |sink logit|


@dataclass(frozen=True)
class ViewConfig:
    """Raw control values. Which sizes apply depends on ``mode`` (see ``Lq``/``Lk``)."""

    mode: str = "prefill"  # "prefill" | "chunked" | "decode"
    L: int = 128  # prefill: Lq = Lk = L
    chunk: int = 64  # chunked: new query rows
    cache: int = 192  # chunked and decode: tokens already in the KV cache
    align: str = "bottom-right"  # chunked, causal: where the diagonal sits
    D: int = 16  # head dim
    Br: int = 16  # Q block (rows per tile)
    Bc: int = 16  # KV block (keys per tile)
    mask: str = "causal"  # "causal" | "window" | "none"
    W: int = 64  # sliding window, keys per query (mask == "window" or "sinks")
    sinks: int = 4  # attention sinks: first keys every row sees (mask == "sinks")
    docs: int = 3  # packed documents of equal length (mask == "docs")
    prefix: int = 32  # prefix-LM: positions below it see the whole prefix (mask == "prefix")
    sink_logit: float | None = None  # gpt-oss: one extra logit in every row's softmax
    B: int = 1  # batch (memory and timing panels)
    Hq: int = 8  # query heads
    Hkv: int = 8  # KV heads (GQA when < Hq)
    scenario: str = "random"
    seed: int = 0
    bug: str | None = None  # the bug lab: a name of attnviz.bugs.BUGS, None: the real thing

    @property
    def Lq(self) -> int:
        return {"prefill": self.L, "chunked": self.chunk, "decode": 1}[self.mode]

    @property
    def Lk(self) -> int:
        return {"prefill": self.L, "chunked": self.cache + self.chunk,
                "decode": self.cache + 1}[self.mode]

    @property
    def causal(self) -> bool:
        return self.mask != "none"

    @property
    def q_offset(self) -> int | None:
        """Absolute position of query row 0; None (= bottom-right default) unless top-left."""
        if self.causal and self.mode == "chunked" and self.align == "top-left":
            return 0
        return None

    @property
    def window(self) -> int | None:
        return self.W if self.mask in ("window", "sinks") else None

    @property
    def Tr(self) -> int:
        return cdiv(self.Lq, self.Br)

    @property
    def Tc(self) -> int:
        return cdiv(self.Lk, self.Bc)

    def mask_kwargs(self) -> dict:
        """causal / q_offset / window (and sinks, prefix, doc_ids, sink_logits when used), as
        ``run_trace`` takes them (the sink logit is the traced head's number)."""
        kw = {"causal": self.causal, "q_offset": self.q_offset, "window": self.window}
        if self.mask == "sinks":
            kw["sinks"] = self.sinks
        if self.mask == "prefix":
            kw["prefix"] = self.prefix
        if self.mask == "docs":
            kw["doc_ids"] = packed_doc_ids(self.Lk, self.docs)
        if self.sink_logit is not None:
            kw["sink_logits"] = self.sink_logit
        return kw

    def describe(self) -> str:
        """One line for captions and file names' companions."""
        mask = {"causal": "causal", "none": "no mask", "window": f"window {self.W}",
                "sinks": f"{self.sinks} sinks + window {self.W}",
                "docs": f"{self.docs} packed documents", "prefix": f"prefix-LM {self.prefix}",
                }[self.mask]
        if self.sink_logit is not None:
            mask += f", sink logit {self.sink_logit:g}"
        bug = f", bug {self.bug}" if self.bug else ""
        return (f"{self.mode}: Lq={self.Lq}, Lk={self.Lk}, D={self.D}, Br={self.Br}, "
                f"Bc={self.Bc}, {mask}, {self.scenario}, seed {self.seed}{bug}")


DEFAULT = ViewConfig()
FIELDS = tuple(f.name for f in fields(ViewConfig))
CHOICES = {"mode": MODES, "mask": MASKS, "align": ALIGNS, "scenario": SCENARIOS}


def _nearest(value: int, options) -> int:
    return min(options, key=lambda o: (abs(o - value), o))


def _first_fitting(value: int, options, fits) -> int:
    """The smallest option >= value that ``fits``; the largest option if none does."""
    for o in options:
        if o >= value and fits(o):
            return o
    return options[-1]


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= cap)


class _Clamper:
    """Collects the corrected values and one notice per correction."""

    def __init__(self, raw: dict):
        self.raw, self.values, self.notices = raw, {}, []

    def note(self, name, got, used, why):
        self.notices.append(f"{name}={got!r} {why}; using {used}.")
        self.values[name] = used

    def integer(self, name, lo, hi):
        got = self.raw.get(name, getattr(DEFAULT, name))
        try:
            value = int(got)
            if isinstance(got, float) and got != value:
                raise ValueError
        except (TypeError, ValueError):
            self.note(name, got, getattr(DEFAULT, name), "is not an integer")
            return
        used = min(max(value, lo), hi)
        if used != value:
            self.note(name, got, used, f"is outside [{lo}, {hi}]")
        else:
            self.values[name] = used

    def choice(self, name):
        got = self.raw.get(name, getattr(DEFAULT, name))
        if got in CHOICES[name]:
            self.values[name] = got
        else:
            self.note(name, got, getattr(DEFAULT, name),
                      f"is not one of {', '.join(CHOICES[name])}")

    def number(self, name, lo, hi):
        """A float in [lo, hi], or None (empty: off)."""
        got = self.raw.get(name, getattr(DEFAULT, name))
        if got is None or got in ("", "None", "none"):
            self.values[name] = None
            return
        try:
            value = float(got)
            if not math.isfinite(value):
                raise ValueError
        except (TypeError, ValueError):
            self.note(name, got, getattr(DEFAULT, name), "is not a finite number")
            return
        used = min(max(value, lo), hi)
        if used != value:
            self.note(name, got, used, f"is outside [{lo:g}, {hi:g}]")
        else:
            self.values[name] = used

    def bug(self):
        """None (empty, "none") or a name of BUGS."""
        got = self.raw.get("bug")
        if got is None or got in ("", "None", "none"):
            self.values["bug"] = None
        elif got in BUGS:
            self.values["bug"] = got
        else:
            self.note("bug", got, None, f"is not one of none, {', '.join(BUGS)}")

    def option(self, name, options):
        self.integer(name, options[0], options[-1])
        v = self.values[name]
        if v not in options:
            self.note(name, v, _nearest(v, options), "is not an offered size")


def clamp(raw: dict) -> tuple[ViewConfig, list[str]]:
    """A valid ViewConfig from raw values (missing keys take defaults), and the notices."""
    c = _Clamper(raw)
    for name in ("mode", "mask", "align", "scenario"):
        c.choice(name)
    c.integer("L", 1, MAX_TRACE_LEN)
    c.integer("chunk", 1, MAX_TRACE_LEN - 1)
    c.integer("cache", 1, MAX_TRACE_LEN - 1)
    c.option("D", D_OPTIONS)
    c.option("Br", BLOCK_OPTIONS)
    c.option("Bc", BLOCK_OPTIONS)
    c.integer("W", 1, MAX_TRACE_LEN)
    c.integer("sinks", 1, MAX_TRACE_LEN)
    c.integer("docs", 1, MAX_DOCS)
    c.integer("prefix", 1, MAX_TRACE_LEN)
    c.number("sink_logit", -MAX_SINK_LOGIT, MAX_SINK_LOGIT)
    c.integer("B", 1, MAX_B)
    c.integer("Hq", 1, MAX_H)
    c.integer("Hkv", 1, MAX_H)
    c.integer("seed", 0, MAX_SEED)
    c.bug()
    v = c.values
    # Relations between values: KV cache + chunk within the trace bound, GQA groups whole.
    if v["mode"] == "chunked" and v["cache"] + v["chunk"] > MAX_TRACE_LEN:
        c.note("cache", v["cache"], MAX_TRACE_LEN - v["chunk"],
               f"+ chunk {v['chunk']} exceeds Lk <= {MAX_TRACE_LEN}")
    Lk = ViewConfig(**v).Lk
    for name in ("sinks", "docs", "prefix"):  # the masks of real models, within the keys
        if v["mask"] == name and v[name] > Lk:
            c.note(name, v[name], Lk, f"exceeds Lk={Lk}")
    if v["Hkv"] > v["Hq"] or v["Hq"] % v["Hkv"]:
        c.note("Hkv", v["Hkv"], _largest_divisor_at_most(v["Hq"], v["Hkv"]),
               f"must divide Hq={v['Hq']}")
    cfg = ViewConfig(**v)
    # The tile grid: raise the blocks until it fits.
    Br = _first_fitting(cfg.Br, BLOCK_OPTIONS, lambda b: cdiv(cfg.Lq, b) <= MAX_GRID)
    Bc = _first_fitting(cfg.Bc, BLOCK_OPTIONS, lambda b: cdiv(cfg.Lk, b) <= MAX_GRID)
    while cdiv(cfg.Lq, Br) * cdiv(cfg.Lk, Bc) > MAX_TILES:
        if cdiv(cfg.Lk, Bc) >= cdiv(cfg.Lq, Br):
            Bc = BLOCK_OPTIONS[BLOCK_OPTIONS.index(Bc) + 1]
        else:
            Br = BLOCK_OPTIONS[BLOCK_OPTIONS.index(Br) + 1]
    grid = f"keeps the tile grid within {MAX_GRID} x {MAX_GRID} and {MAX_TILES} tiles"
    if Br != cfg.Br:
        c.note("Br", cfg.Br, Br, f"for Lq={cfg.Lq} is too small: a larger Q block {grid}")
    if Bc != cfg.Bc:
        c.note("Bc", cfg.Bc, Bc, f"for Lk={cfg.Lk} is too small: a larger KV block {grid}")
    return replace(cfg, Br=Br, Bc=Bc), c.notices


def typed_view(cfg: ViewConfig) -> dict[str, int | str]:
    """The values of ``cfg`` its mode uses, typed (ints as ints): ``to_query`` without the
    strings, for files such as the JSON export."""
    unused = {"prefill": {"chunk", "cache", "align"}, "chunked": {"L"},
              "decode": {"L", "chunk", "align"}}[cfg.mode]
    if cfg.mask not in ("window", "sinks"):
        unused = unused | {"W"}
    unused = unused | {m for m in ("sinks", "docs", "prefix") if cfg.mask != m}
    if cfg.sink_logit is None:
        unused = unused | {"sink_logit"}
    if cfg.bug is None:
        unused = unused | {"bug"}
    return {k: v for k, v in asdict(cfg).items() if k not in unused}


def to_query(cfg: ViewConfig, **extra) -> dict[str, str]:
    """URL parameters for ``cfg`` (only the sizes its mode uses) plus ``extra`` (step, row)."""
    params = {k: str(v) for k, v in typed_view(cfg).items()}
    params.update({k: str(v) for k, v in extra.items()})
    return params


def from_query(params: dict[str, str]) -> dict:
    """The ViewConfig keys present in ``params``, as raw values for ``clamp``."""
    return {k: params[k] for k in FIELDS if k in params}
