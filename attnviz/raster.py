"""A small raster chart kit on Pillow: a canvas, data-to-pixel plots, colour maps, ticks.

Why not a plotting library: the step view redraws its figures on every step click, and
Plotly re-rendering them in the browser cost about a second per click, with a 4.7 MB bundle
on the first load. A PNG drawn here costs milliseconds on the server and only an ``<img>``
swap in the browser. The figures themselves are in ``attnviz.images``.

Coordinates are logical pixels (CSS pixels at 100 % zoom), origin top-left. A ``Canvas``
draws at ``scale`` device pixels per logical pixel so text stays sharp on HiDPI screens and
in exported PNGs. A ``Plot`` maps data coordinates into a box of the canvas; its ``pixel``
method gives the device pixel of a data point, which is how tests read figures back.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from isal import isal_zlib
from PIL import Image, ImageDraw, ImageFont

TEXT = (49, 51, 63)
MUTED = (100, 106, 120)
AXIS = (160, 166, 176)
GRID = (232, 234, 237)
WHITE = (255, 255, 255)

# DejaVu Sans (Debian's fonts-dejavu-core, present wherever Chromium is) has the math signs
# the labels use; Pillow's built-in font is the fallback, with those signs spelled in ASCII.
_FONT_FILES = ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
_ASCII = str.maketrans({"−": "-", "–": "-", "×": "x", "≤": "<=", "′": "'", "α": "alpha",
                        "₆": "6", "₄": "4", "·": "*"})


def rgb(color: str | tuple) -> tuple[int, int, int]:
    """'#rrggbb' or an (r, g, b) tuple as an (r, g, b) tuple."""
    if isinstance(color, str):
        h = color.lstrip("#")
        return tuple(int(h[k:k + 2], 16) for k in (0, 2, 4))
    return tuple(int(c) for c in color[:3])


@lru_cache(maxsize=1024)
def blend(color, over, alpha: float) -> tuple[int, int, int]:
    """``over`` painted with opacity ``alpha`` on ``color``."""
    a, b = np.array(rgb(color), float), np.array(rgb(over), float)
    return tuple(int(round(x)) for x in a * (1 - alpha) + b * alpha)


@lru_cache(maxsize=None)
def _font(px: int) -> tuple[ImageFont.FreeTypeFont, bool]:
    """(font at ``px`` device pixels, whether it has the non-ASCII signs)."""
    for name in _FONT_FILES:
        try:
            return ImageFont.truetype(name, px), True
        except OSError:
            continue
    return ImageFont.load_default(size=px), False


class Colormap:
    """A colour scale from evenly spaced stops, as a 256-entry lookup table."""

    def __init__(self, stops: list[str]):
        pos = np.linspace(0, 1, len(stops))
        c = np.array([rgb(s) for s in stops], float)
        t = np.linspace(0, 1, 256)
        self.lut = np.stack([np.interp(t, pos, c[:, k]) for k in range(3)], 1).astype(np.uint8)

    def colors(self, z: np.ndarray, lo: float, hi: float, missing) -> np.ndarray:
        """[..., 3] uint8 colours of z on [lo, hi]; non-finite entries get ``missing``."""
        z = np.asarray(z, np.float64)
        finite = np.isfinite(z)
        t = np.clip((np.where(finite, z, lo) - lo) / ((hi - lo) or 1.0), 0, 1)
        out = self.lut[np.rint(t * 255).astype(np.intp)]
        out[~finite] = rgb(missing)
        return out


DIVERGING = Colormap(["#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62",
                      "#b2182b"])  # negative blue, 0 white, positive red
VIRIDIS = Colormap(["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89",
                    "#35b779", "#6ece58", "#b5de2b", "#fde725"])


class Canvas:
    """A white image of ``width`` x ``height`` logical pixels, drawn at ``scale``."""

    def __init__(self, width: int, height: int, scale: int = 2):
        self.width, self.height, self.scale = width, height, scale
        self.image = Image.new("RGB", (width * scale, height * scale), WHITE)
        self.draw = ImageDraw.Draw(self.image)

    def _p(self, xy) -> tuple[float, float]:
        return xy[0] * self.scale, xy[1] * self.scale

    def _font(self, size: float, s: str) -> tuple[ImageFont.FreeTypeFont, str]:
        font, rich = _font(int(round(size * self.scale)))
        return font, s if rich else s.translate(_ASCII)

    def text_width(self, s: str, size: float = 12) -> float:
        font, s = self._font(size, s)
        return _text_length(font, s) / self.scale

    def text(self, xy, s: str, *, size: float = 12, color=TEXT, anchor: str = "la",
             angle: int = 0) -> None:
        """Text at ``xy`` (Pillow anchors: 'la' left-ascender, 'mm' middle, 'rm' right...);
        ``angle`` 90 writes bottom to top (a y-axis title), centred on ``xy``."""
        font, s = self._font(size, s)
        mask, (dx, dy) = _text_mask(font, s, anchor, angle)
        x, y = self._p(xy)
        self.image.paste(rgb(color), (int(round(x + dx)), int(round(y + dy))), mask)

    def line(self, pts, color, width: float = 1, dash: tuple[float, float] | None = None):
        """A polyline through logical points; ``dash`` = (on, off) lengths."""
        pts = [self._p(p) for p in pts]
        w = max(1, int(round(width * self.scale)))
        if dash is None:
            self.draw.line(pts, fill=rgb(color), width=w, joint="curve")
            return
        on, off = dash[0] * self.scale, dash[1] * self.scale
        for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
            seg = math.hypot(x1 - x0, y1 - y0)
            t = 0.0
            while t < seg:
                t1 = min(t + on, seg)
                self.draw.line([(x0 + (x1 - x0) * t / seg, y0 + (y1 - y0) * t / seg),
                                (x0 + (x1 - x0) * t1 / seg, y0 + (y1 - y0) * t1 / seg)],
                               fill=rgb(color), width=w)
                t = t1 + off

    def rect(self, box, *, fill=None, outline=None, width: float = 1) -> None:
        x0, y0 = self._p(box[:2])
        x1, y1 = self._p(box[2:])
        self.draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=None if fill is None else rgb(fill),
                            outline=None if outline is None else rgb(outline),
                            width=max(1, int(round(width * self.scale))))

    def marker(self, xy, shape: str, size: float, color) -> None:
        """'o' circle, 's' square, '^' triangle, 'x' cross; ``size`` across, logical px."""
        x, y = self._p(xy)
        h = size * self.scale / 2
        c = rgb(color)
        if shape == "o":
            self.draw.ellipse((x - h, y - h, x + h, y + h), fill=c)
        elif shape == "s":
            self.draw.rectangle((x - h, y - h, x + h, y + h), fill=c)
        elif shape == "^":
            self.draw.polygon([(x, y - h * 1.15), (x - h, y + h * 0.75), (x + h, y + h * 0.75)],
                              fill=c)
        elif shape == "x":
            w = max(2, int(self.scale * 1.5))
            self.draw.line([(x - h, y - h), (x + h, y + h)], fill=c, width=w)
            self.draw.line([(x - h, y + h), (x + h, y - h)], fill=c, width=w)
        else:
            raise ValueError(f"unknown marker {shape!r}")

    def paste(self, colors: np.ndarray, box) -> None:
        """An [rows, cols, 3] uint8 array stretched over ``box`` (nearest neighbour: every
        cell stays a flat rectangle)."""
        x0, y0 = (int(round(v)) for v in self._p(box[:2]))
        x1, y1 = (int(round(v)) for v in self._p(box[2:]))
        img = Image.fromarray(np.ascontiguousarray(colors, np.uint8), "RGB")
        self.image.paste(img.resize((max(1, x1 - x0), max(1, y1 - y0)), Image.NEAREST),
                         (x0, y0))

    def png(self) -> bytes:
        """The image as PNG bytes, written here: rows unfiltered, deflated by ISA-L at level
        1. Pillow's encoder tries a filter per row, which doubles the time for these
        flat-coloured figures and saves little; ISA-L's deflate is ~10x faster than zlib's
        level 1 on them, at the same size (a step's S/P~ image: 9 -> 1.4 ms, 120 KB)."""
        a = np.asarray(self.image)
        h, w, _ = a.shape
        raw = np.empty((h, 1 + 3 * w), np.uint8)  # each row: filter byte 0, then RGB
        raw[:, 0] = 0
        raw[:, 1:] = a.reshape(h, 3 * w)
        return b"".join((b"\x89PNG\r\n\x1a\n",
                         _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
                         _chunk(b"IDAT", isal_zlib.compress(memoryview(raw), 1)),
                         _chunk(b"IEND", b"")))


@lru_cache(maxsize=4096)
def _text_length(font: ImageFont.FreeTypeFont, s: str) -> float:
    """The advance width of ``s`` in device pixels (tick labels repeat on every step)."""
    return font.getlength(s)


@lru_cache(maxsize=4096)
def _text_mask(font: ImageFont.FreeTypeFont, s: str, anchor: str, angle: int
               ) -> tuple[Image.Image, tuple[float, float]]:
    """The coverage mask of ``s`` and its offset from the anchor point, in device pixels.

    Rendered once per (font, text, anchor, angle): a step redraws the same tick labels,
    legends and titles, and FreeType's rendering was a third of a figure's drawing time.
    """
    if not angle:
        x0, y0, x1, y1 = font.getbbox(s, anchor=anchor)
        mask = Image.new("L", (max(1, x1 - x0), max(1, y1 - y0)), 0)
        ImageDraw.Draw(mask).text((-x0, -y0), s, font=font, fill=255, anchor=anchor)
        return mask, (x0, y0)
    w, h = int(font.getlength(s)) + 4, int(font.size * 1.4)
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).text((w / 2, h / 2), s, font=font, fill=255, anchor="mm")
    mask = mask.rotate(angle, expand=True)
    return mask, (-mask.width / 2, -mask.height / 2)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))


@dataclass(frozen=True)
class Axis:
    """A data range [lo, hi] on a linear or log10 scale; ``flip`` puts lo at the far end
    (rows growing downwards, as in a matrix)."""
    lo: float
    hi: float
    log: bool = False
    flip: bool = False

    def frac(self, v: float) -> float:
        if self.log:
            v, lo, hi = math.log10(v), math.log10(self.lo), math.log10(self.hi)
        else:
            lo, hi = self.lo, self.hi
        t = (v - lo) / ((hi - lo) or 1.0)
        return 1 - t if self.flip else t


class Plot:
    """Data coordinates (x, y) in the logical box (x0, y0, x1, y1) of a canvas."""

    def __init__(self, canvas: Canvas, box, x: Axis, y: Axis):
        self.canvas, self.box, self.x, self.y = canvas, tuple(box), x, y

    def xy(self, x: float, y: float) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return x0 + (x1 - x0) * self.x.frac(x), y1 - (y1 - y0) * self.y.frac(y)

    def pixel(self, x: float, y: float) -> tuple[int, int]:
        """(row, column) of the device pixel at data point (x, y): index an image array."""
        px, py = self.xy(x, y)
        s = self.canvas.scale
        return int(py * s), int(px * s)

    def frame(self, grid_x=(), grid_y=()) -> None:
        """Light grid lines at the given data values, then the box's outline."""
        x0, y0, x1, y1 = self.box
        for v in grid_x:
            self.canvas.line([self.xy(v, self.y.lo), self.xy(v, self.y.hi)], GRID)
        for v in grid_y:
            self.canvas.line([self.xy(self.x.lo, v), self.xy(self.x.hi, v)], GRID)
        self.canvas.rect(self.box, outline=AXIS)

    def xticks(self, values, labels=None, title: str = "", size: float = 11) -> None:
        labels = labels or [tick_label(v) for v in values]
        y1 = self.box[3]
        for v, s in zip(values, labels, strict=True):
            x, _ = self.xy(v, self.y.lo)
            self.canvas.line([(x, y1), (x, y1 + 4)], AXIS)
            self.canvas.text((x, y1 + 6), s, size=size, anchor="ma")
        if title:
            self.canvas.text(((self.box[0] + self.box[2]) / 2, y1 + 8 + 1.4 * size), title,
                             size=size + 1, anchor="ma")

    def yticks(self, values, labels=None, title: str = "", right: bool = False,
               size: float = 11, color=TEXT) -> None:
        labels = labels or [tick_label(v) for v in values]
        x = self.box[2] if right else self.box[0]
        d = 1 if right else -1
        widest = 0.0
        for v, s in zip(values, labels, strict=True):
            _, y = self.xy(self.x.lo, v)
            self.canvas.line([(x, y), (x + 4 * d, y)], AXIS)
            self.canvas.text((x + 6 * d, y), s, size=size, anchor="lm" if right else "rm",
                             color=color)
            widest = max(widest, self.canvas.text_width(s, size))
        if title:
            self.canvas.text((x + d * (widest + 10 + 0.7 * size), (self.box[1] + self.box[3]) / 2),
                             title, size=size + 1, angle=90, color=color)

    def title(self, s: str, size: float = 13) -> None:
        self.canvas.text(((self.box[0] + self.box[2]) / 2, self.box[1] - 6), s, size=size,
                         anchor="md")

    def cells(self, colors: np.ndarray) -> None:
        """An [rows, cols, 3] image over the box, cell (r, c) centred on data (c, r) when the
        axes span [-0.5, cols - 0.5] and [-0.5, rows - 0.5] (plus any offset)."""
        self.canvas.paste(colors, self.box)

    def line(self, xs, ys, color, width: float = 2, dash=None) -> None:
        """A line through (x, y); non-finite y values break it into pieces."""
        run: list[tuple[float, float]] = []
        for x, y in [*zip(xs, ys, strict=True), (None, None)]:
            if y is not None and math.isfinite(y):
                run.append(self.xy(x, y))
                continue
            if len(run) > 1:
                self.canvas.line(run, color, width, dash)
            elif run:
                self.canvas.marker(run[0], "o", width * 1.5, color)
            run = []

    def markers(self, xs, ys, shape: str, size: float, color) -> None:
        for x, y in zip(xs, ys, strict=True):
            if y is not None and math.isfinite(y):
                self.canvas.marker(self.xy(x, y), shape, size, color)

    def vline(self, x: float, color, width: float = 2, dash=(5, 4)) -> None:
        self.canvas.line([self.xy(x, self.y.lo), self.xy(x, self.y.hi)], color, width, dash)

    def hline(self, y: float, color, width: float = 2, dash=(6, 4)) -> None:
        self.canvas.line([self.xy(self.x.lo, y), self.xy(self.x.hi, y)], color, width, dash)


def colorbar(canvas: Canvas, box, cmap: Colormap, lo: float, hi: float, ticks=None) -> Plot:
    """A vertical colour bar in ``box`` for values [lo, hi], ticked on the right."""
    t = np.linspace(hi, lo, 128)[:, None]
    bar = Plot(canvas, box, Axis(0, 1), Axis(lo, hi))
    bar.cells(cmap.colors(t, lo, hi, WHITE))
    canvas.rect(box, outline=AXIS)
    bar.yticks(nice_ticks(lo, hi, 5) if ticks is None else ticks, right=True, size=10)
    return bar


def legend(canvas: Canvas, x: float, y: float, entries, width: float, size: float = 11,
           draw: bool = True) -> float:
    """A row-wrapping legend from (x, y); entries are (label, kind, color) with kind a
    marker shape or '-' (a line) or '--' (a dashed line). Returns the height it takes
    (``draw=False``: only that)."""
    cx, cy, line_h = x, y, size * 1.7
    for label, kind, color in entries:
        w = 22 + canvas.text_width(label, size) + 14
        if cx > x and cx + w > x + width:
            cx, cy = x, cy + line_h
        mid = cy + line_h / 2
        if not draw:
            cx += w
            continue
        if kind in ("-", "--"):
            canvas.line([(cx, mid), (cx + 16, mid)], color, 2.5, (4, 3) if kind == "--" else None)
        else:
            canvas.marker((cx + 8, mid), kind, 10, color)
        canvas.text((cx + 22, mid), label, size=size, anchor="lm")
        cx += w
    return cy + line_h - y


def padded_range(lo: float, hi: float) -> tuple[float, float]:
    """An axis range around [lo, hi] with 8% room on each side (a flat range gets +-0.5 or
    10%; a non-finite one is (0, 1)), so no mark sits on the frame."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0
    pad = 0.08 * (hi - lo) if hi > lo else max(0.5, 0.1 * abs(hi))
    return lo - pad, hi + pad


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round values (steps of 1, 2, 5 x 10^k) within [lo, hi], about n of them."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(1, n - 1)
    e = math.floor(math.log10(raw))
    step = next(b * 10.0**e for b in (1, 2, 5, 10) if b * 10.0**e >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    return [round(first + k * step, 12) for k in range(count)]


def index_ticks(start: int, count: int, most: int = 8) -> list[int]:
    """Whole indices in [start, start + count) at a round step (1, 2, 5, 10, ...) giving at
    most about ``most`` ticks, on multiples of the step (absolute row/key numbers)."""
    step = next(b * 10**e for e in range(8) for b in (1, 2, 5) if b * 10**e >= count / most)
    first = -(-start // step) * step
    return list(range(first, start + count, step))


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi]: the first <= lo, the last >= hi (at least two), every
    k-th decade so that there are at most 7. Thinning counts down from the top, so the
    largest value is never above the last tick."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    b = max(b, a + 1)
    every = max(1, math.ceil((b - a) / 6))
    count = -(-(b - a) // every) + 1
    return [10.0**(b - k * every) for k in reversed(range(count))]


def tick_label(v: float) -> str:
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        m, e = f"{v:.0e}".split("e")
        return f"{m}e{int(e)}"
    return f"{v:g}".replace("-", "−")
