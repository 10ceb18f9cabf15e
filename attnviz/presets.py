"""Named starting points for the app: a teacher picks one, a learner starts from "first look".

Each preset is a full ``ViewConfig`` (so loading one leaves no stale value behind) and one
sentence on what it is for. Every preset lies within the bounds of ``viewconfig.clamp``
(the tests check that clamping changes nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

from .viewconfig import ViewConfig


@dataclass(frozen=True)
class Preset:
    config: ViewConfig
    about: str


PRESETS: dict[str, Preset] = {
    "first look": Preset(
        ViewConfig(mode="prefill", L=128, D=16, Br=16, Bc=16, mask="causal"),
        "8 x 8 tiles, causal: watch the upper triangle being skipped and each row's m and l."),
    "seed's 32x64 blocks": Preset(
        ViewConfig(mode="prefill", L=512, D=64, Br=32, Bc=64, mask="causal", Hq=16, Hkv=8),
        "The block sizes of the engine this project grew from (32 queries x 64 keys)."),
    "long prefill": Preset(
        ViewConfig(mode="prefill", L=4096, D=128, Br=64, Bc=64, mask="causal", Hq=8, Hkv=2),
        "A realistic prompt: 64 x 64 tiles, half skipped; see memory and timing below."),
    "decode with a KV cache": Preset(
        ViewConfig(mode="decode", cache=1023, D=128, Br=1, Bc=64, mask="causal", Hq=32,
                   Hkv=8),
        "One new token against 1023 cached ones: with its own key, 1024 keys in 16 KV tiles "
        "of 64, walked by a single row."),
    "chunked prefill": Preset(
        ViewConfig(mode="chunked", chunk=128, cache=384, D=64, Br=32, Bc=64, mask="causal"),
        "128 new tokens after 384 cached ones: the diagonal sits bottom-right."),
    "sliding window": Preset(
        ViewConfig(mode="prefill", L=512, D=32, Br=32, Bc=32, mask="window", W=96),
        "Each query sees its last 96 keys: tiles are skipped on both sides of the band."),
    "attention sink": Preset(
        ViewConfig(mode="prefill", L=256, D=32, Br=32, Bc=32, scenario="sink"),
        "Key 0 dominates every row: m is set by the first tile and never rescaled."),
    "late spike": Preset(
        ViewConfig(mode="prefill", L=256, D=32, Br=32, Bc=32, scenario="late_spike"),
        "A key at 3/4 of the sequence: rows that reach it rescale by a tiny alpha."),
    "StreamingLLM (sinks + window)": Preset(
        ViewConfig(mode="prefill", L=512, D=32, Br=32, Bc=32, mask="sinks", W=128, sinks=4),
        "The first 4 keys stay visible to every row beside a window of 128: one column of "
        "sink tiles at the left, the band, and every tile between them skipped."),
    "three packed documents": Preset(
        ViewConfig(mode="prefill", L=400, D=32, Br=32, Bc=32, mask="docs", docs=3),
        "Three documents packed in one sequence: each query sees its own document, "
        "causally; the tiles across documents are skipped, never computed."),
    "prefix-LM": Preset(
        ViewConfig(mode="prefill", L=256, D=32, Br=16, Bc=16, mask="prefix", prefix=96),
        "The first 96 positions see the whole prefix (bidirectional), later ones are causal: "
        "the diagonal starts at the prefix's corner."),
    "gpt-oss sink logits": Preset(
        ViewConfig(mode="prefill", L=256, D=64, Br=32, Bc=32, mask="window", W=128,
                   sink_logit=1.0),
        "A sliding window of 128 with a learned sink logit per head: every row starts from "
        "m = s, l = 1, acc = 0, so the sink takes its share of the softmax and adds nothing."),
}

DEFAULT_PRESET = "first look"
