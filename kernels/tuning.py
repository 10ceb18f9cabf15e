"""The kernels' machine-dependent choices: built-in defaults, or what ``kernels.autotune``
measured on this host, read from a JSON file. Calls never tune: they read.

What is chosen (``Tuning``):
* ``blocks``: (Br, Bc), the Q and KV block of the streaming prefill, per head dim D and per
  length class: a prefill against Lk keys takes the blocks of the last of ``LK_CLASSES`` at
  or below Lk (short prompts; mid-length ones; long prompts and chunks against a long cache;
  very long ones).
  The best tile grows with the keys a Q block walks: larger tiles read each K/V tile for
  more rows, which pays over many tiles, while short prefills want more, smaller tasks
  (BENCHMARKS.md, on one host: at D=128, 256×256 took 0.96x torch's time at L=4096 where
  128×128 took 1.01x, and 0.92x at L=256 where 64×64 took 0.64x; at D=64, 64×128 took
  0.87x at L=1024 where 64×64 took 0.91x, and 0.79x at L=256 where 64×64 took 0.76x; at
  L=8192, D=128, 512×512 took 1.00x where 256×256 took 1.06x);
* ``decode``: (Bc, loops) of the split-KV decode per D: its KV block, and whether each of
  its [g, Bc] tile products (S = Q K^T, P~ V) runs as plain loops (True) or BLAS
  (``kernels/smallmm.py``): loops = (for S, for P~ V);
* ``decode_min_chunk``: the fewest keys a split-KV decode chunk holds (``api.decode_split``).

A choice tuned on one machine can lose on another (BENCHMARKS.md: per-tile BLAS tuned on
oneMKL cost decode its lead on OpenBLAS), so a file is keyed by the host: CPU model, the BLAS
library the tile GEMMs call (``kernels.BLAS``) and the Numba thread count. It lives in
``<cache root>/autotune/<hash of the key>.json`` (cache root: ``$ATTNVIZ_CACHE_DIR`` or
``~/.cache/attnviz``); a file for another key is never read, and one whose recorded key
differs is ignored. ``ATTNVIZ_AUTOTUNE=off`` pins the built-in defaults (and turns the
autotune off).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import hostload
from ._config import cache_root

# 3: prefill blocks per length class; 4: decode loops per product. A file of another schema
# is measured again.
SCHEMA = 4
ENV = "ATTNVIZ_AUTOTUNE"

# Built-in (Br, Bc) per head dim, from `python -m attnviz.bench --sweep-blocks` on an Intel
# host (BENCHMARKS.md). Other D take the nearest entry.
BUILTIN_BLOCKS = {16: (128, 128), 32: (128, 128), 64: (128, 128), 128: (128, 128),
                  256: (64, 64)}
# Length classes of the prefill blocks, by their fewest keys: short, mid, long, very long.
LK_CLASSES = (0, 768, 2048, 8192)
BUILTIN_DECODE_LOOPS = (False, False)  # BLAS for both: 1.1-1.5x faster on oneMKL (Intel)
# the decode's KV block: the prefill's Bc (blocks_for(D)[1]) unless tuned
# Chunks of at least this many keys per decode task: below it, scheduling costs more than it
# gains; above it, enough chunks to feed every core (``api.decode_split``).
BUILTIN_DECODE_MIN_CHUNK = 512


@dataclass(frozen=True)
class Tuning:
    """The choices in force. ``blocks`` holds the tuned D only; ``blocks_for`` falls back on
    the built-in table for the others."""

    blocks: dict = field(default_factory=dict)  # D -> {length class: (Br, Bc)}, tuned
    decode: dict = field(default_factory=dict)  # D -> (Bc, (loops for S, for P~V)), tuned
    decode_min_chunk: int = BUILTIN_DECODE_MIN_CHUNK
    source: str = "built-in defaults"  # where the values come from, for people
    host: dict = field(default_factory=dict)  # the key it was measured for
    measured: dict = field(default_factory=dict)  # the timings behind each choice (ms)
    seconds: float = 0.0  # how long the autotune took
    complete: bool = False  # every choice measured within the time budget
    others: float | None = None  # other processes' CPU use while tuning, cores (None: unknown)

    @property
    def tuned(self) -> bool:
        return bool(self.host)

    @property
    def busy(self) -> bool:
        """Tuned while other processes took a share of the cores: its timings may have
        measured the scheduler more than the kernels (``tune_if_missing`` redoes it when the
        machine is quiet)."""
        return self.tuned and hostload.is_busy(self.others)

    def blocks_for(self, D: int, Lk: int | None = None) -> tuple[int, int]:
        """(Br, Bc) of a prefill against ``Lk`` keys (None: the shortest class): the entry
        tuned for the nearest D and Lk's length class, or for the nearest class below it
        that was tuned (a budget that ran out leaves the longest classes unmeasured), else
        the built-in one of that D."""
        near = _nearest({**BUILTIN_BLOCKS, **self.blocks}, D)
        tuned = self.blocks.get(near, {})
        below = [c for c in tuned if c <= lk_class(Lk)]
        return tuned[max(below)] if below else BUILTIN_BLOCKS[_nearest(BUILTIN_BLOCKS, D)]

    def decode_for(self, D: int) -> tuple[int, tuple[bool, bool]]:
        """(Bc, loops) of the decode, loops = (for S, for P~V): the tuned entry of the
        nearest D when one was tuned that near, else (the prefill's Bc, built-in BLAS)."""
        if self.decode:
            near = _nearest(self.decode, D)
            if near == _nearest({**BUILTIN_BLOCKS, **self.decode}, D):
                return self.decode[near]
        return self.blocks_for(D)[1], BUILTIN_DECODE_LOOPS

    def to_json(self) -> dict:
        return {"schema": SCHEMA, "host": self.host, "source": self.source,
                "blocks": {str(D): {str(c): list(b) for c, b in sorted(by_lk.items())}
                           for D, by_lk in sorted(self.blocks.items())},
                "decode": {str(D): [Bc, *loops] for D, (Bc, loops) in sorted(self.decode.items())},
                "decode_min_chunk": self.decode_min_chunk,
                "measured": self.measured, "seconds": round(self.seconds, 2),
                "complete": self.complete,
                "others_cores": None if self.others is None else round(self.others, 3)}


BUILTIN = Tuning()


def _nearest(table: dict, D: int) -> int:
    return min(table, key=lambda d: (abs(d - D), d))


def lk_class(Lk: int | None) -> int:
    """The length class of a prefill against ``Lk`` keys: the last of ``LK_CLASSES`` <= Lk."""
    return max(c for c in LK_CLASSES if c <= (Lk or 0))


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo (what a tuning, and the bench, name the host by)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


_CPU = cpu_model()


def host_key(threads: int | None = None) -> dict:
    """What a tuning is valid for: CPU model, the tile GEMMs' BLAS and the thread count."""
    import numba

    from . import BLAS

    return {"cpu": _CPU, "blas": BLAS.describe(),
            "threads": int(numba.get_num_threads() if threads is None else threads)}


def tuning_dir() -> Path:
    return cache_root() / "autotune"


def path_for(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return tuning_dir() / f"{digest}.json"


def _parse(data: dict, key: dict, path: Path) -> Tuning | None:
    """The Tuning a file holds, or None when it is for another key, schema or malformed."""
    try:
        if data.get("schema") != SCHEMA or data.get("host") != key:
            return None
        blocks = {}
        for D, by_lk in data["blocks"].items():
            for c, (Br, Bc) in by_lk.items():
                if not (int(D) > 0 and int(c) in LK_CLASSES and int(Br) > 0 and int(Bc) > 0):
                    return None
                blocks.setdefault(int(D), {})[int(c)] = (int(Br), int(Bc))
        decode = {}
        for D, (Bc, loops_s, loops_pv) in data["decode"].items():
            if not (int(D) > 0 and int(Bc) > 0 and not isinstance(Bc, bool)
                    and isinstance(loops_s, bool) and isinstance(loops_pv, bool)):
                return None
            decode[int(D)] = (int(Bc), (loops_s, loops_pv))
        chunk = int(data["decode_min_chunk"])
        if chunk < 1:
            return None
        others = data.get("others_cores")
        return Tuning(blocks, decode, chunk, f"tuned on this host ({path})", key,
                      data.get("measured", {}), float(data.get("seconds", 0.0)),
                      bool(data.get("complete", False)),
                      None if others is None else float(others))
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def load(key: dict) -> Tuning | None:
    """The tuning stored for ``key``, or None."""
    path = path_for(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return _parse(data, key, path) if isinstance(data, dict) else None


def save(tuning: Tuning) -> Path:
    """Write ``tuning`` for its host key (atomically: readers see the old file or the new)."""
    path = path_for(tuning.host)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(tuning.to_json(), indent=1, sort_keys=True))
    os.replace(tmp, path)
    _memo.clear()
    return path


def disabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no")


_memo: dict[str, tuple[int, Tuning]] = {}  # file -> (its mtime_ns, what it held)
_paths: dict[tuple, tuple[dict, Path]] = {}  # (threads, cache env) -> (host key, file)
_OFF = Tuning(source=f"built-in defaults ({ENV}=off)")


def active() -> Tuning:
    """The choices in force for this host and thread count: the stored tuning, else the
    built-in defaults. Cheap (a stat per call), so a file written by another process (``make
    warm``, ``--autotune``) is picked up."""
    if disabled():
        return _OFF
    import numba

    threads = numba.get_num_threads()
    memo = (threads, os.environ.get("ATTNVIZ_CACHE_DIR"), os.environ.get("XDG_CACHE_HOME"))
    where = _paths.get(memo)
    if where is None:  # the key and its file, once per thread count (and cache folder)
        key = host_key(threads)
        where = _paths[memo] = (key, path_for(key))
    key, path = where
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return BUILTIN
    hit = _memo.get(str(path))
    if hit is None or hit[0] != mtime:
        hit = (mtime, load(key) or BUILTIN)
        _memo[str(path)] = hit
    return hit[1]


def products(loops) -> str:
    """The decode tile products' choice in words: "loops", "BLAS", or one of each, e.g.
    "S by loops, P~V by BLAS"."""
    if loops[0] == loops[1]:
        return "loops" if loops[0] else "BLAS"
    return ", ".join(f"{name} by {'loops' if lp else 'BLAS'}"
                     for name, lp in zip(("S", "P~V"), loops, strict=True))


def summary(t: Tuning | None = None) -> dict:
    """The choices in force, the host key and where they come from (for the bench report and
    the timing panel). ``text`` is one line for people."""
    t = active() if t is None else t
    key = t.host or host_key()
    Ds = sorted({64, 128, *t.blocks, *t.decode})
    by_lk = {D: {c: t.blocks_for(D, c) for c in LK_CLASSES} for D in Ds}
    decode = {D: t.decode_for(D) for D in Ds}

    def prefill(D):
        (_, first), *rest = by_lk[D].items()
        grows, last = [], first
        for c, b in rest:  # name a class only where its blocks differ from the one before
            if b != last:
                grows.append(f"Lk >= {c}: {b[0]}×{b[1]}")
            last = b
        return f"D={D}: {first[0]}×{first[1]}" + (f" ({', '.join(grows)})" if grows else "")

    untuned = "" if not t.tuned else "; other head dims: the built-in blocks"
    text = ("prefill blocks " + ", ".join(prefill(D) for D in Ds) + untuned
            + "; decode tiles " + ", ".join(f"D={D}: {Bc} keys, {products(lp)}"
                                           for D, (Bc, lp) in decode.items())
            + f"; decode chunks >= {t.decode_min_chunk} keys")
    where = t.source
    if t.tuned:
        where = (f"tuned on this host in {t.seconds:.1f} s"
                 + ("" if t.complete else " (the time budget ran out before every "
                                         "candidate was timed)"))
        if t.busy:
            where += (f" while other processes used {t.others:.2f} cores: those timings may "
                      "be noise; `make warm` measures again on a quiet machine")
    return {"blocks": {D: b[0] for D, b in by_lk.items()}, "blocks_by_lk": by_lk,
            "decode": decode,
            "decode_min_chunk": t.decode_min_chunk, "source": t.source, "tuned": t.tuned,
            "busy": t.busy, "others": t.others, "host": key, "measured": t.measured,
            "text": f"{text} ({where}; host: {key['cpu']}, {key['blas']}, "
                    f"{key['threads']} thread{'s' * (key['threads'] != 1)})"}
