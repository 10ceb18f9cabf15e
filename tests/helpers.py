"""Shared test inputs: seeded random tensors with ragged sizes, and the comparison bound."""
from __future__ import annotations

import numpy as np

from attnviz.reference import attention_reference
from kernels import tuning

# Relative error bound of float32 kernels against the float64 oracle, on O and on LSE.
RTOL = 1e-5


def qkv(B, Hq, Hkv, Lq, Lk, D, *, dtype=np.float32, seed=0, spread=1.0):
    """Random q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] (never zeros; scores of spread ~ spread)."""
    rng = np.random.default_rng(seed)
    q = (spread * rng.standard_normal((B, Hq, Lq, D))).astype(dtype)
    k = rng.standard_normal((B, Hkv, Lk, D)).astype(dtype)
    v = rng.standard_normal((B, Hkv, Lk, D)).astype(dtype)
    return q, k, v


def rel_err(x, ref):
    """max |x - ref| / max(1, max |ref|) over finite entries; -inf must match -inf exactly."""
    x = np.asarray(x, np.float64)
    ref = np.asarray(ref, np.float64)
    assert x.shape == ref.shape, (x.shape, ref.shape)
    assert not np.isnan(x).any(), "NaN in result"
    inf = np.isinf(ref)
    assert np.array_equal(np.isinf(x), inf), "-inf (row sees no key) in different places"
    if (~inf).sum() == 0:
        return 0.0
    return float(np.abs(x[~inf] - ref[~inf]).max() / max(1.0, np.abs(ref[~inf]).max()))


def assert_matches_oracle(out, lse, q, k, v, rtol=RTOL, **mask):
    """out/lse from a kernel against the float64 oracle on the *same* (rounded) inputs."""
    O_ref, lse_ref = attention_reference(q.astype(np.float32), k.astype(np.float32),
                                         v.astype(np.float32), **mask)
    e_out, e_lse = rel_err(out, O_ref), rel_err(lse, lse_ref)
    assert e_out <= rtol and e_lse <= rtol, f"out err {e_out:.2e}, lse err {e_lse:.2e} > {rtol}"
    return e_out, e_lse


def forced_tuning(pair: tuple[bool, bool], Bc: int = 64) -> tuning.Tuning:
    """The tuning in force with decode's tiles set to ``Bc`` keys and the products ``pair``
    (for S, for P~V: True for plain loops, False for BLAS) for every D (an entry at each
    built-in D: ``decode_for`` takes the nearest), marked as tuned on this host."""
    base = tuning.active()
    return tuning.Tuning(blocks=base.blocks,
                         decode={D: (Bc, pair) for D in tuning.BUILTIN_BLOCKS},
                         decode_min_chunk=base.decode_min_chunk, source="test",
                         host=base.host or tuning.host_key())
