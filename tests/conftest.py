"""Fixtures shared by the test modules."""
from __future__ import annotations

import pytest

from kernels import tuning
from tests.helpers import forced_tuning


@pytest.fixture(params=[(False, False), (True, False), (False, True), (True, True)],
                ids=["blas", "loops-S", "loops-PV", "loops"])
def decode_loops(request, monkeypatch):
    """Run the decode path with each of its tile products (S, P~V) through BLAS or as plain
    loops."""
    forced = forced_tuning(request.param)
    monkeypatch.setattr(tuning, "active", lambda: forced)
    return request.param
