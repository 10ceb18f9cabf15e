"""Input scenarios: seeded, deterministic Q, K, V that make one behaviour of online softmax visible.

Each scenario is a recipe for the rows of Q and of K/V. ``generate`` builds full
``[B, Hq, Lq, D]`` / ``[B, Hkv, Lk, D]`` float32 arrays; every head gets its own random stream
``default_rng([seed, role, b, h])``, so head (0, 0) is the same whatever B, Hq and Hkv are: the
head the stepper traces is exactly head 0 of what the timing panel runs.

Scores are ``S = Q K^T / sqrt(D)``. With unit-variance Q and K a score has variance 1 (a row
max of a few). The scenarios steer that with one shared unit direction ``u``: a query
``q = z + sqrt(D) u`` scores ``c`` against a key ``c u``, whatever D is.

* ``random``      Q, K, V ~ N(0, 1). The running max m grows early and settles; rescales fade.
* ``sink``        key 0 scores ``SINK_SCORE`` for every query (an "attention sink", as in
                  StreamingLLM): the first KV tile sets m once, later tiles never rescale
                  (alpha = 1), and O leans towards V[0].
* ``late_spike``  one key three quarters of the way in scores ``SPIKE_SCORE``: the rows that
                  see it meet it late, after m has settled, and rescale everything they
                  accumulated by alpha = exp(m_old - m_new) of about e^-7: the big rescale.
* ``rising``      scores grow steadily with key position (almost no noise): each row's max
                  moves on at every tile it sees, so every step rescales by a modest alpha.
* ``large_logits`` Q and K scaled by ``LARGE_SIGMA``: scores of +-100 and more. exp(S)
                  without subtracting the max would overflow float32 (exp(88.7) = inf);
                  online softmax subtracts the running max and stays finite.
* ``equal``       Q = 0, so every score is 0: P~ = 1 on every visible key, m = 0 from the
                  first tile on, l counts the visible keys and O is the mean of the visible V.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

SINK_SCORE = 10.0  # score of the sink key for every query
SPIKE_SCORE = 12.0  # score of the late key for every query that sees it
RISE_SCORE = 8.0  # score gained from the first key to the last in ``rising``
RISE_NOISE = 0.01  # small noise on the rising keys, so the ramp decides the max
LARGE_SIGMA = 6.0  # std of Q and K entries in ``large_logits``: scores have std 36
F32_EXP_OVERFLOW = 88.72  # exp(x) is inf in float32 above this

_Q, _KV, _U = 0, 1, 2  # random-stream roles


@dataclass(frozen=True)
class Scenario:
    """A named recipe. ``queries(rng, Lq, D, u)`` -> Q [Lq, D];
    ``keys(rng, Lk, D, u)`` -> (K, V) [Lk, D] each (float64 is fine; cast later)."""

    name: str
    label: str
    what_to_watch: str
    queries: Callable
    keys: Callable


def _normal_q(rng, Lq, D, u):
    return rng.standard_normal((Lq, D))


def _normal_kv(rng, Lk, D, u):
    return rng.standard_normal((Lk, D)), rng.standard_normal((Lk, D))


def _aligned_q(rng, Lq, D, u):
    """z - (z.u) u + sqrt(D) u: scores exactly c against the key c u, noise elsewhere."""
    z = rng.standard_normal((Lq, D))
    return z - np.outer(z @ u, u) + np.sqrt(D) * u


def late_position(Lk: int) -> int:
    """The key index of the ``late_spike`` scenario: three quarters of the way in."""
    return min(Lk - 1, (3 * Lk) // 4)


def _sink_kv(rng, Lk, D, u):
    K, V = _normal_kv(rng, Lk, D, u)
    K[0] = SINK_SCORE * u
    return K, V


def _spike_kv(rng, Lk, D, u):
    K, V = _normal_kv(rng, Lk, D, u)
    K[late_position(Lk)] = SPIKE_SCORE * u
    return K, V


def _rising_kv(rng, Lk, D, u):
    K, V = _normal_kv(rng, Lk, D, u)
    ramp = RISE_SCORE * np.arange(Lk) / max(1, Lk - 1)  # [Lk] score of key t
    return RISE_NOISE * K + ramp[:, None] * u, V


def _large_q(rng, Lq, D, u):
    return LARGE_SIGMA * rng.standard_normal((Lq, D))


def _large_kv(rng, Lk, D, u):
    return LARGE_SIGMA * rng.standard_normal((Lk, D)), rng.standard_normal((Lk, D))


def _zero_q(rng, Lq, D, u):
    return np.zeros((Lq, D))


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("random", "random", "m settles after the first tiles; rescales become rare "
             "and small.", _normal_q, _normal_kv),
    Scenario("sink", "attention sink on key 0", "the first KV tile sets m for good: later "
             "steps have alpha = 1 (no rescale).", _aligned_q, _sink_kv),
    Scenario("late_spike", "late spike (big rescale)", "rows that see the late key rescale "
             "what they accumulated by a tiny alpha at that tile.", _aligned_q, _spike_kv),
    Scenario("rising", "rising scores (rescale every tile)", "the max moves on every tile: "
             "alpha < 1 at almost every step.", _aligned_q, _rising_kv),
    Scenario("large_logits", "large logits (exp would overflow)", "scores far above 88.7, "
             "where exp overflows float32; subtracting m keeps P~ <= 1.", _large_q, _large_kv),
    Scenario("equal", "equal scores (Q = 0)", "P~ = 1 everywhere: l counts the visible keys "
             "and O averages the visible V.", _zero_q, _normal_kv),
)}


def _direction(seed: int, D: int) -> np.ndarray:
    u = np.random.default_rng([seed, _U]).standard_normal(D)
    return u / np.linalg.norm(u)


def generate(name: str, Lq: int, Lk: int, D: int, *, seed: int = 0, B: int = 1, Hq: int = 1,
             Hkv: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, D]) float32 for scenario ``name``."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    s = SCENARIOS[name]
    u = _direction(seed, D)
    q = np.empty((B, Hq, Lq, D), np.float32)
    k = np.empty((B, Hkv, Lk, D), np.float32)
    v = np.empty((B, Hkv, Lk, D), np.float32)
    for b in range(B):
        for h in range(Hq):
            q[b, h] = s.queries(np.random.default_rng([seed, _Q, b, h]), Lq, D, u)
        for h in range(Hkv):
            k[b, h], v[b, h] = s.keys(np.random.default_rng([seed, _KV, b, h]), Lk, D, u)
    return q, k, v


def one_head(name: str, Lq: int, Lk: int, D: int, *, seed: int = 0):
    """(q [Lq, D], k [Lk, D], v [Lk, D]): head (b=0, h=0) of ``generate``, for the trace."""
    q, k, v = generate(name, Lq, Lk, D, seed=seed)
    return q[0, 0], k[0, 0], v[0, 0]
