"""``python -m attnviz.bench --backward``: every contender gated on the float64 oracle, timed
in the same run, its peak memory measured in a fresh process; torch's backward also through
its own worker process (what the benchmark does when the kernels bound oneMKL)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from attnviz.bench import backward
from attnviz.bench.cases import prefill
from attnviz.reference import attention_backward_reference
from tests.helpers import rel_err

ROOT = Path(__file__).resolve().parents[1]


def test_run_gates_times_and_measures_each_contender():
    rows = backward.run([64, 130], [16], ["streaming", "standard"], repeats=3, budget_s=0.5,
                        memory=True)
    assert [(r.case.Lq, r.name) for r in rows] == [(64, "streaming"), (64, "standard"),
                                                   (130, "streaming"), (130, "standard")]
    for r in rows:
        assert r.status == "ok", r.reason
        assert r.gate_err < 1e-5 and len(r.times_s) >= 3 and r.min_s > 0
        assert r.extra_bytes is not None and r.extra_bytes > 0
    md = "\n".join(backward.table(rows))
    assert "| prefill H=8 L=130 D=16 |" in md and "streaming / torch" in md


def test_a_wrong_gradient_gets_no_time(monkeypatch):
    real = backward.prepare

    def broken(name, case, *args):
        call = real(name, case, *args)
        return lambda: tuple(1.001 * g for g in call()) if name == "standard" else call()

    monkeypatch.setattr(backward, "prepare", broken)
    rows = backward.run([40], [8], ["streaming", "standard"], repeats=3, budget_s=0.2,
                        memory=False)
    assert rows[0].status == "ok" and rows[1].status == "wrong" and not rows[1].times_s


def test_torch_backward_in_its_worker_matches_the_oracle():
    pytest.importorskip("torch", reason="torch is not installed: its backward cannot be "
                        "compared (the other contenders' tests still run)")
    from attnviz.bench.torchworker import TorchWorker

    case = prefill(48, 16, H=2)
    q, k, v, out, lse, dout = backward.grad_inputs(case)
    worker = TorchWorker()
    try:
        worker.ask("load_backward", q, k, v, dout, True, None)
        grads = worker.ask("out")
        want = attention_backward_reference(q, k, v, dout)
        for g, w in zip(grads, want, strict=True):
            assert rel_err(g, w) < 1e-5
        assert 0 < worker.ask("time", 2) < 10
    finally:
        worker.close()


def test_cli_backward_prints_the_table():
    cmd = [sys.executable, "-m", "attnviz.bench", "--backward", "--backward-L", "64",
           "--backward-D", "16", "--contenders", "streaming,standard", "--repeats", "3",
           "--budget", "0.2", "--no-memory"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "| prefill H=8 L=64 D=16 |" in proc.stdout
    assert "streaming backward: max error vs the float64 oracle" in proc.stdout
    errs = [float(x) for x in re.findall(r"oracle \(head 0\) (\d\.\de-\d\d)", proc.stdout)]
    assert len(errs) == 2 and max(errs) < 1e-5 and np.isfinite(errs).all()


def test_sweep_blocks_times_each_tile_size_in_one_run():
    t = backward.sweep_blocks(90, 16, [(16, 16), (7, 13)], repeats=3, budget_s=0.3)
    assert list(t) == [(16, 16), (7, 13)]
    assert all(len(x) >= 3 and min(x) > 0 for x in t.values())
