"""Fixtures shared by the test modules."""
from __future__ import annotations

import pytest

from kernels import tuning


@pytest.fixture(params=[(False, False), (True, False), (False, True), (True, True)],
                ids=["blas", "loops-S", "loops-PV", "loops"])
def decode_loops(request, monkeypatch):
    """Run the decode path with each of its tile products (S, P~V) through BLAS or as plain
    loops."""
    base = tuning.active()
    forced = tuning.Tuning(blocks=base.blocks,
                           decode={D: (64, request.param) for D in (16, 24, 32, 64, 128)},
                           decode_min_chunk=base.decode_min_chunk, source="test",
                           host=base.host)
    monkeypatch.setattr(tuning, "active", lambda: forced)
    return request.param
