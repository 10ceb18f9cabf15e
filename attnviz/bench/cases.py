"""What is benchmarked: the attention calls (cases), their inputs, and the work they do.

A ``Case`` is one attention call: q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] float32 plus the mask
keywords the kernels take (causal, q_offset, window). Its FLOPs are counted exactly from the
mask: query row r at absolute position ``p = q_offset + r`` sees the keys of one contiguous
span ``[lo, hi)``, so the visible (query, key) pairs are a sum of span lengths, computed per
row in closed form -- never from a dense [Lq, Lk] mask (1 GiB of booleans at L = 32768 for
what one subtraction per row gives).

    FLOPs = 4 * D * B * Hq * visible_pairs      (QK^T and PV, a multiply-add counted as 2)

so causal L = 4096 is about 2 * B * H * L^2 * D.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

from ..masks import row_spans, visible_pairs
from ..memory import Shape

F32 = 4  # bytes per float32


@dataclass(frozen=True)
class Case:
    """One attention call to benchmark (all arrays float32)."""

    group: str  # "prefill", "chunked prefill", "decode", "long context", "custom"
    B: int  # batch
    Hq: int  # query heads
    Hkv: int  # key/value heads (Hq % Hkv == 0; GQA when Hkv < Hq)
    Lq: int  # query rows
    Lk: int  # keys
    D: int  # head dim
    causal: bool = True
    q_offset: int | None = None  # absolute position of query row 0; None = Lk - Lq
    window: int = 0  # sliding window W (0 = none)

    @property
    def offset(self) -> int:
        """q_offset with the kernels' default filled in (bottom-right alignment)."""
        return self.Lk - self.Lq if self.q_offset is None else self.q_offset

    @property
    def shape(self) -> Shape:
        return Shape(self.B, self.Hq, self.Hkv, self.Lq, self.Lk, self.D)

    @property
    def label(self) -> str:
        """Short, unique within a suite: e.g. ``prefill L=4096 D=128``."""
        if self.Lq == self.Lk:
            size = f"L={self.Lq}"
        elif self.Lq == 1:
            size = f"L={self.Lk}"
        else:
            size = f"Lq={self.Lq} Lk={self.Lk}"
        heads = f"H={self.Hq}" if self.Hq == self.Hkv else f"Hq={self.Hq} Hkv={self.Hkv}"
        extra = "" if self.causal else " full"
        if self.window:
            extra += f" W={self.window}"
        if self.q_offset is not None:
            extra += f" q_offset={self.q_offset}"
        b = f"B={self.B} " if self.B != 1 else ""
        return f"{self.group} {b}{heads} {size} D={self.D}{extra}"

    def mask_kwargs(self) -> dict:
        """The mask keywords of ``streaming_attention`` / ``attention_reference``."""
        return dict(causal=self.causal, q_offset=self.q_offset if self.causal else None,
                    window=self.window or None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["label"] = self.label
        return d


def attention_flops(case: Case) -> int:
    """4 * D per visible pair (2 for the QK^T multiply-add, 2 for PV), for all B * Hq heads."""
    pairs = visible_pairs(case.Lq, case.Lk, causal=case.causal, q_offset=case.offset,
                          window=case.window)
    return 4 * case.D * case.B * case.Hq * pairs


def kv_read_bytes(case: Case) -> int:
    """Bytes of K and V a kernel must read at least once: the keys any row sees, per KV head.

    This is what decode (Lq = 1) is bound by; reading K/V once per *query* head (as a GQA
    copy does) costs Hq / Hkv times more.
    """
    lo, hi = row_spans(case.Lq, case.Lk, causal=case.causal, q_offset=case.offset,
                       window=case.window)
    seen = int(hi.max() - lo.min()) if case.Lq and (hi > lo).any() else 0
    return 2 * F32 * case.B * case.Hkv * seen * case.D


def make_inputs(case: Case, seed: int = 0):
    """Seeded q [B, Hq, Lq, D], k, v [B, Hkv, Lk, D] float32 (standard normal, so the scores
    scale * q.k are ~ N(0, 1)). Generated directly in float32: no float64 temporaries."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((case.B, case.Hq, case.Lq, case.D), dtype=np.float32)
    k = rng.standard_normal((case.B, case.Hkv, case.Lk, case.D), dtype=np.float32)
    v = rng.standard_normal((case.B, case.Hkv, case.Lk, case.D), dtype=np.float32)
    return q, k, v


# --- the suites (issue 4) ---------------------------------------------------------------------

def prefill(L: int, D: int, H: int = 8, B: int = 1, **kw) -> Case:
    return Case("prefill", B, H, H, L, L, D, **kw)


def decode(L: int, Hq: int = 32, Hkv: int = 8, D: int = 128, B: int = 1, **kw) -> Case:
    return Case("decode", B, Hq, Hkv, 1, L, D, **kw)


def chunked(Lq: int, Lk: int, D: int, H: int = 8, B: int = 1, **kw) -> Case:
    """A chunk of Lq new queries against a cache of Lk keys (causal, bottom-right)."""
    return Case("chunked prefill", B, H, H, Lq, Lk, D, **kw)


def long_context(L: int = 32768, D: int = 128, H: int = 8, B: int = 1) -> Case:
    return Case("long context", B, H, H, L, L, D)


def full_suite() -> list[Case]:
    """Issue 4's shapes: prefill B=1 H=8 L in {256, 1024, 4096, 8192} x D in {64, 128}
    (causal); one chunked prefill (Lq < Lk, where torch's is_causal would be wrong); decode
    Hq=32 Hkv=8 D=128 L in {1024, 8192, 32768}; long context L=32768 H=8 D=128."""
    cases = [prefill(L, D) for L in (256, 1024, 4096, 8192) for D in (64, 128)]
    cases.append(chunked(512, 4096, 128))
    cases += [decode(L) for L in (1024, 8192, 32768)]
    cases.append(long_context())
    return cases


def quick_suite() -> list[Case]:
    """A subset that runs in about a minute: small prefill, a chunk, one decode."""
    return [prefill(256, 64), prefill(1024, 128), chunked(256, 1024, 64), decode(8192)]


_GROUPS = {"prefill": prefill, "decode": decode, "chunk": chunked, "long": long_context}
_INT_KEYS = {"B", "H", "Hq", "Hkv", "L", "Lq", "Lk", "D", "window", "q_offset"}


def parse_case(spec: str) -> Case:
    """``GROUP[:key=value,...]`` -> Case, for ``--case``. GROUP is prefill, decode, chunk or
    long; keys B, H (or Hq/Hkv), L (or Lq/Lk), D, causal (0/1), window, q_offset.

    ``prefill:L=512,D=64,H=4``; ``decode:L=4096``; ``chunk:Lq=64,Lk=1024,D=64``.
    """
    group, _, rest = spec.partition(":")
    if group not in _GROUPS:
        raise ValueError(f"case group {group!r}: expected one of {', '.join(_GROUPS)}")
    kw: dict = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or (key not in _INT_KEYS and key != "causal"):
            raise ValueError(f"case {spec!r}: bad item {item!r} "
                             f"(keys: {sorted(_INT_KEYS)}, causal)")
        try:
            kw[key] = bool(int(value)) if key == "causal" else int(value)
        except ValueError:
            raise ValueError(f"case {spec!r}: {key}={value!r} is not an integer (items are "
                             "separated by commas: prefill:L=512,D=64)") from None
    L = kw.pop("L", None)
    window, q_offset, causal = kw.pop("window", 0), kw.pop("q_offset", None), kw.pop("causal", True)
    if group == "prefill":
        case = prefill(L or 1024, kw.pop("D", 128), kw.pop("H", 8), kw.pop("B", 1))
        Hq, Hkv = kw.pop("Hq", case.Hq), kw.pop("Hkv", None)
        case = replace(case, Hq=Hq, Hkv=Hkv or Hq, Lq=kw.pop("Lq", case.Lq),
                       Lk=kw.pop("Lk", case.Lk))
    elif group == "decode":
        case = decode(L or kw.pop("Lk", 8192), kw.pop("Hq", 32), kw.pop("Hkv", 8),
                      kw.pop("D", 128), kw.pop("B", 1))
    elif group == "chunk":
        case = chunked(kw.pop("Lq", 256), kw.pop("Lk", L or 1024), kw.pop("D", 64),
                       kw.pop("H", 8), kw.pop("B", 1))
    else:
        case = long_context(L or 32768, kw.pop("D", 128), kw.pop("H", 8), kw.pop("B", 1))
    if kw:
        raise ValueError(f"case {spec!r}: {sorted(kw)} do not apply to {group}")
    return replace(case, causal=causal, window=window, q_offset=q_offset)
