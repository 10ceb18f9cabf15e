"""``python -m attnviz.bench --backward``: the backward pass, timed and measured.

Contenders, each returning (dq, dk, dv) for one causal prefill case:

* ``streaming``  ``kernels.streaming_attention_backward`` (FlashAttention-2's tiles)
* ``standard``   ``kernels.standard_attention_backward`` (P and dS materialized)
* ``torch``      PyTorch SDPA's backward through autograd: the forward runs once with the
                 graph kept, each timed call is ``torch.autograd.grad`` alone (in its own
                 process when the kernels bound oneMKL, see ``torchworker``)

The inputs O and LSE come from ``streaming_attention(..., return_lse=True)``; dO is random.
Every contender is gated first against the float64 analytic oracle on head 0 (heads are
independent: Hq == Hkv), then the three are timed round-robin in the same run (JIT and the
first call excluded; ``measure.time_round_robin``). Peak memory: one fresh subprocess per
(contender, case) measures the peak RSS above the level right before the call
(``python -m attnviz.bench.backward PROBE-JSON``).
"""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .cases import Case, attention_flops, make_inputs, prefill
from .contenders import torch_available, torch_in_process, torch_mask
from .machine import child_env
from .measure import time_round_robin

NAMES = ("streaming", "standard", "torch")
LABELS = {"streaming": "streaming backward", "standard": "standard backward",
          "torch": "torch SDPA backward"}
TOL = 1e-4  # relative to max |gradient| of head 0, against the float64 oracle


def cases(Ls, Ds) -> list[Case]:
    return [prefill(L, D) for D in Ds for L in Ls]


def grad_inputs(case: Case, seed: int = 0):
    """q, k, v (``make_inputs``), O and LSE from the streaming forward, and a random dO."""
    from kernels import streaming_attention

    q, k, v = make_inputs(case, seed)
    out, lse = streaming_attention(q, k, v, return_lse=True, **case.mask_kwargs())
    dout = np.random.default_rng(seed + 1).standard_normal(q.shape, dtype=np.float32)
    return q, k, v, out, lse, dout


def prepare(name: str, case: Case, q, k, v, out, lse, dout, blocks=(None, None)):
    """A zero-argument call returning (dq, dk, dv) as NumPy float32 arrays; ``blocks``
    (q_block, kv_block) of the streaming backward (None: its default)."""
    kw = case.mask_kwargs()
    if name == "streaming":
        from kernels import streaming_attention_backward

        return lambda: streaming_attention_backward(q, k, v, out, lse, dout, **kw,
                                                    q_block=blocks[0], kv_block=blocks[1],
                                                    check_finite=False)
    if name == "standard":
        from kernels import standard_attention_backward

        from .contenders import _standard_limit

        limit = _standard_limit()
        return lambda: standard_attention_backward(q, k, v, out, lse, dout, **kw,
                                                   check_finite=False, max_bytes=limit)
    if name == "torch":
        from . import torchworker

        kind, mask = torch_mask(case)
        if not torch_in_process():
            w = torchworker.worker()
            w.ask("load_backward", q, k, v, dout, kind == "is_causal", mask)
            return torchworker.RemoteCall(w)
        call = torchworker.sdpa_backward_call(q, k, v, dout, kind == "is_causal", mask)
        return lambda: tuple(x.numpy() for x in call())
    raise ValueError(f"unknown backward contender {name!r}; choose from {', '.join(NAMES)}")


def gate_error(grads, want) -> float:
    """max over dq, dk, dv of max |x - oracle| / max |oracle| on head 0."""
    errs = []
    for x, ref in zip(grads, want, strict=True):
        ref = ref[0, 0]
        errs.append(float(np.abs(x[0, 0] - ref).max() / max(np.abs(ref).max(), 1e-30)))
    return max(errs)


@dataclass
class Row:
    case: Case
    name: str
    status: str = "ok"  # ok / wrong / refused / error
    reason: str = ""
    gate_err: float | None = None
    times_s: list[float] = field(default_factory=list)
    extra_bytes: int | None = None  # peak RSS above the level before the call

    @property
    def min_s(self) -> float | None:
        return min(self.times_s) if self.times_s else None

    @property
    def median_s(self) -> float | None:
        return float(np.median(self.times_s)) if self.times_s else None

    @property
    def flops(self) -> int:
        """Backward FLOPs: 5 GEMMs per visible pair where the forward has 2 (2.5x)."""
        return attention_flops(self.case) * 5 // 2


def run(Ls, Ds, names=None, *, repeats=5, budget_s=60.0, memory=True, seed=0,
        progress=lambda msg: None) -> list[Row]:
    from ..reference import attention_backward_reference

    names = [n for n in (names or NAMES) if n != "torch" or torch_available()]
    rows: list[Row] = []
    for case in cases(Ls, Ds):
        def say(msg, case=case):
            progress(f"backward {case.label}: {msg}")

        q, k, v, out, lse, dout = grad_inputs(case, seed)
        say("float64 oracle (head 0)")
        want = attention_backward_reference(q[:, :1], k[:, :1], v[:, :1], dout[:, :1],
                                            **case.mask_kwargs())
        calls, known = {}, {}
        for name in names:
            row = Row(case, name)
            rows.append(row)
            say(f"gate {name}")
            try:
                call = prepare(name, case, q, k, v, out, lse, dout)
                call()  # warm: JIT, thread pools, first-touch of the outputs
                t0 = time.perf_counter()
                grads = call()
                known[name] = time.perf_counter() - t0
            except MemoryError as e:
                row.status, row.reason = "refused", str(e)
                continue
            row.gate_err = gate_error(grads, want)
            del grads
            if not row.gate_err <= TOL:
                row.status, row.reason = "wrong", f"error vs oracle {row.gate_err:.1e}"
                continue
            calls[name] = call
        del want
        gc.collect()
        timed = time_round_robin(calls, repeats=repeats, budget_s=budget_s, known_s=known,
                                 progress=say)
        for row in rows:
            if row.case == case and row.name in timed:
                row.times_s = timed[row.name][0]
        del calls, q, k, v, out, lse, dout
        gc.collect()
    if memory:
        for row in rows:
            if row.status == "ok":
                progress(f"peak memory: {row.name} {row.case.label} (fresh subprocess)")
                row.extra_bytes = peak_memory(row.case, row.name, seed)
    return rows


def sweep_blocks(L: int, D: int, blocks, *, repeats=5, budget_s=60.0, seed=0,
                 progress=lambda msg: None) -> dict[tuple[int, int], list[float]]:
    """The streaming backward at each (q_block, kv_block), timed round-robin in one run on
    one causal prefill case (each gated on the float64 oracle first): per-call seconds."""
    from ..reference import attention_backward_reference

    case = prefill(L, D)
    inputs = grad_inputs(case, seed)
    q, k, v, out, lse, dout = inputs
    want = attention_backward_reference(q[:, :1], k[:, :1], v[:, :1], dout[:, :1])
    calls = {}
    for b in blocks:
        call = prepare("streaming", case, *inputs, blocks=b)
        err = gate_error(call(), want)
        if not err <= TOL:
            raise AssertionError(f"blocks {b}: error vs oracle {err:.1e}")
        calls[f"{b[0]}x{b[1]}"] = call
    timed = time_round_robin(calls, repeats=repeats, budget_s=budget_s, progress=progress)
    return {b: timed[f"{b[0]}x{b[1]}"][0] for b in blocks}


# --- peak memory in a fresh process ---------------------------------------------------------

def peak_memory(case: Case, name: str, seed: int = 0) -> int | None:
    spec = {"case": case.to_dict(), "name": name, "seed": seed}
    env = child_env() | {"MALLOC_MMAP_THRESHOLD_": "65536"}  # see memprobe.peak_memory
    if name == "torch":
        env["ATTNVIZ_BLAS"] = "openblas"
    proc = subprocess.run([sys.executable, "-m", "attnviz.bench.backward", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1])["extra_bytes"] if proc.returncode == 0 and lines else None


def _probe(spec: dict) -> dict:
    from dataclasses import fields, replace

    from ..rss import reset_peak, status_bytes

    keys = {f.name for f in fields(Case)}
    case = Case(**{k: v for k, v in spec["case"].items() if k in keys})
    tiny = replace(case, Lq=16, Lk=16)
    prepare(spec["name"], tiny, *grad_inputs(tiny, spec["seed"]))()  # warm
    inputs = grad_inputs(case, spec["seed"])
    call = prepare(spec["name"], case, *inputs)  # torch: its forward and graph before
    gc.collect()
    before = status_bytes("VmRSS")
    ok = reset_peak()
    call()
    peak = status_bytes("VmHWM") if ok else None
    return {"extra_bytes": None if peak is None else max(0, peak - before)}


# --- the report -----------------------------------------------------------------------------

def _ms(t) -> str:
    return "-" if t is None else f"{1e3 * t:,.0f}"


def _mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:,.1f}"


def table(rows: list[Row]) -> list[str]:
    """Markdown: one line per case, the contenders side by side (same run)."""
    names = [n for n in NAMES if any(r.name == n for r in rows)]
    head = (["case"] + [f"{LABELS[n]} ms (min / median)" for n in names]
            + ["streaming / torch (min)", "streaming GFLOP/s"]
            + [f"{n} peak extra MiB" for n in names] + ["dq+dk+dv MiB"])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_case: dict[Case, dict[str, Row]] = {}
    for r in rows:
        by_case.setdefault(r.case, {})[r.name] = r
    for case, got in by_case.items():
        cells = [case.label]
        for n in names:
            r = got.get(n)
            cells.append(f"{_ms(r.min_s)} / {_ms(r.median_s)}" if r and r.times_s
                         else (r.status + ": " + r.reason[:60]) if r else "-")
        s, t = got.get("streaming"), got.get("torch")
        ratio = (f"{s.min_s / t.min_s:.2f}x" if s and t and s.min_s and t.min_s else "-")
        cells += [ratio, f"{s.flops / s.min_s / 1e9:.1f}" if s and s.min_s else "-"]
        cells += [_mib(got[n].extra_bytes) if n in got else "-" for n in names]
        cells.append(_mib(4 * case.D * (case.B * case.Hq * case.Lq + 2 * case.B * case.Hkv
                                         * case.Lk)))
        out.append("| " + " | ".join(cells) + " |")
    return out


def gate_lines(rows: list[Row]) -> list[str]:
    errs = {n: [r.gate_err for r in rows if r.name == n and r.gate_err is not None]
            for n in NAMES}
    return [f"- {LABELS[n]}: max error vs the float64 oracle (head 0) {max(e):.1e}"
            for n, e in errs.items() if e]


def main(argv=None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    print(json.dumps(_probe(spec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
