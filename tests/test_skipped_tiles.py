"""The streaming kernels never read a tile that no row of the block sees.

Skipping is the point of the causal (and window, document, sink) masks: a skipped tile must
cost no compute and no memory traffic. Exactness cannot show it (a computed tile that no row
sees adds exp(-inf) = 0), and NaN in its keys cannot either (``tile.PARTIAL_ROWS`` leaves
out keys no row of a group sees). So these tests make the pages of those tiles unreadable
(``tests/guarded.py``): one load from them ends the run with SIGSEGV. Each case is one Q
block against the whole K/V (one case, a call of three: the tiles none of them sees), in
prefill and in split-KV decode; the tiles to guard come
from the dense mask; and the run's result must still match the float64 oracle. The
controls guard one tile that a row does see, and must crash: the guard catches a read.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.guarded import PAGE, unseen_tiles

pytestmark = pytest.mark.nojit  # the pure-Python path must skip the same tiles

ROOT = Path(__file__).resolve().parents[1]
D, BC = 64, 16  # a tile of 16 keys x 64 floats = one 4 KiB page
if PAGE != BC * D * 4:
    pytest.skip(f"the guarded tiles assume 4 KiB pages; this host's are {PAGE} bytes",
                allow_module_level=True)


def _docs(lens) -> list[int]:
    return np.repeat(np.arange(len(lens)), lens).tolist()


def case(name, *, Lq, Lk, q_offset, mask=None, B=1, Hq=4, Hkv=2, Br=None, guard=None):
    """One Q block (rows at q_offset..) against Lk keys; guard: the unseen tiles by default."""
    mask = mask or {}
    if guard is None:
        guard = unseen_tiles(Lq, Lk, BC, q_offset, mask)
    return {"name": name, "B": B, "Hq": Hq, "Hkv": Hkv, "Lq": Lq, "Lk": Lk, "D": D, "Bc": BC,
            "q_offset": q_offset, "mask": mask, "Br": Br or Lq, "guard": guard}


DOCS = _docs([40, 56, 72, 88])  # 256 keys; boundaries inside tiles 2, 5 and 10
CASES = [
    # prefill: the causal future, a Q block of ragged sub-blocks, one above PARTIAL_ROWS
    case("causal block", Lq=32, Lk=256, q_offset=64),
    case("causal, three ragged Q blocks", Lq=40, Lk=256, q_offset=97, Br=16, B=2, Hq=6,
         Hkv=3),
    case("causal 130 rows", Lq=130, Lk=320, q_offset=100),
    case("window", Lq=24, Lk=256, q_offset=200, mask={"window": 48}),
    case("sinks + window", Lq=16, Lk=512, q_offset=400, mask={"window": 64, "sinks": 4}),
    case("prefix", Lq=20, Lk=256, q_offset=10, mask={"prefix": 70}),
    case("documents", Lq=30, Lk=256, q_offset=180, mask={"doc_ids": DOCS}),
    case("documents, block across a boundary", Lq=40, Lk=256, q_offset=80,
         mask={"doc_ids": DOCS}),
    # decode: split-KV chunks over the keys a row sees
    case("decode, future keys", Lq=1, Lk=512, q_offset=300, Hq=8, Hkv=2),
    case("decode, sinks + window", Lq=1, Lk=1024, q_offset=1023, Hq=8, Hkv=2,
         mask={"window": 100, "sinks": 4}),
    case("decode, documents", Lq=1, Lk=256, q_offset=255, mask={"doc_ids": DOCS}),
    case("decode, 80 heads per KV head", Lq=1, Lk=512, q_offset=400, Hq=80, Hkv=1,
         mask={"window": 150, "sinks": 20}),
]


def _run(cases, timeout=240):
    env = dict(os.environ, PYTHONFAULTHANDLER="1")  # a crash prints where it happened
    return subprocess.run([sys.executable, "-m", "tests.guarded", json.dumps(cases)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_cases_guard_something():
    """Every case has tiles to guard (else it would prove nothing)."""
    for c in CASES:
        assert c["guard"], c["name"]
        assert len(c["guard"]) < c["Lk"] // BC, c["name"]  # and some tile to compute


def test_kernels_never_read_a_tile_no_row_sees():
    r = _run(CASES)
    done = [line.removeprefix("ok ") for line in r.stdout.splitlines()]
    crashed = CASES[len(done)]["name"] if len(done) < len(CASES) else None
    assert r.returncode == 0, (
        f"case {crashed!r} read a guarded tile or failed (exit {r.returncode}):\n"
        f"{r.stderr[-3000:]}")
    assert done == [c["name"] for c in CASES]


@pytest.mark.parametrize("name,kw", [
    ("prefill control", {"Lq": 32, "Lk": 256, "q_offset": 64}),
    ("decode control", {"Lq": 1, "Lk": 1024, "q_offset": 1023, "Hq": 8, "Hkv": 2,
                        "mask": {"window": 100, "sinks": 4}}),
])
def test_the_guard_catches_a_read(name, kw):
    """Guard the unseen tiles and one tile the block does see, in the middle of its run:
    the kernel reads it, and the run dies of SIGSEGV."""
    base = case(name, **kw)
    seen = sorted(set(range(kw["Lk"] // BC)) - set(base["guard"]))
    bad = case(name, guard=base["guard"] + [seen[len(seen) // 2]], **kw)
    r = _run([bad])
    assert r.returncode == -signal.SIGSEGV, (r.returncode, r.stderr[-2000:])
