"""``python -m attnviz.bench``: the command line. The only place in the package that prints.

    python -m attnviz.bench                      # issue 4's full suite (long: ~15-20 min)
    python -m attnviz.bench --quick              # a subset in about a minute
    python -m attnviz.bench --markdown           # the tables as BENCHMARKS.md shows them
    python -m attnviz.bench --json out.json      # everything, machine-readable
    python -m attnviz.bench --sweep-blocks --sweep-D 64,128 --sweep-L 4096
    python -m attnviz.bench --case prefill:L=2048,D=64 --case decode:L=16384
    python -m attnviz.bench --autotune           # measure this host's kernel choices again
    python -m attnviz.bench --autotune --quick   # ... then run the quick subset with them
    python -m attnviz.bench --backward           # the backward pass vs torch (issue 13)

Results go to stdout; progress goes to stderr (one line, rewritten, on a terminal).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict

from . import cases as C
from . import torchworker
from .contenders import ALL_NAMES, default_contenders, torch_available, torch_in_process
from .machine import (
    cold_start_seconds,
    cpu_snapshot,
    gemm_roof,
    machine_info,
    other_cores,
    read_bandwidth,
    set_threads,
)
from .measure import DEFAULT_TOL, Settings, run_suite
from .report import (
    describe_machine,
    format_markdown,
    format_sweep,
    format_text,
    metrics,
    roof_lines,
    to_json,
)
from .sweep import sweep_blocks


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m attnviz.bench",
        description="Benchmark exact attention on CPU: NumPy standard, Numba standard, Numba "
                    "streaming and torch SDPA. Every contender is checked against a float64 "
                    "oracle before it is timed; a wrong one gets no time.")
    what = p.add_argument_group("what to run")
    what.add_argument("--quick", action="store_true",
                      help="a small subset (about a minute) instead of the full suite")
    what.add_argument("--case", action="append", metavar="SPEC", default=[],
                      help="run this case instead of a suite (repeatable): GROUP[:k=v,...], "
                           "GROUP in prefill/decode/chunk/long; keys B,H,Hq,Hkv,L,Lq,Lk,D,"
                           "causal,window,q_offset. E.g. prefill:L=2048,D=64")
    what.add_argument("--contenders", type=lambda s: s.split(","), metavar="A,B",
                      help=f"subset of {','.join(ALL_NAMES)} (default: all; torch if installed); "
                           "with --backward: streaming,standard,torch")
    what.add_argument("--autotune", action="store_true",
                      help="measure this host's kernel choices again (blocks, decode tiles, "
                           "decode chunks; <= --autotune-budget s) and store them; alone, "
                           "stop there, else run what else was asked with them")
    what.add_argument("--autotune-budget", type=float, default=20.0, metavar="SECONDS")
    what.add_argument("--sweep-blocks", action="store_true",
                      help="time streaming over a (q_block, kv_block) grid instead of the suite")
    what.add_argument("--sweep-D", type=_ints, default=[64, 128], metavar="D,..")
    what.add_argument("--sweep-L", type=int, default=None, metavar="L",
                      help="sequence length of the sweep (default 4096, --quick 1024)")
    what.add_argument("--backward", action="store_true",
                      help="time the backward pass instead: streaming vs standard vs torch "
                           "SDPA's autograd backward, causal prefill, H=8")
    what.add_argument("--backward-L", type=_ints, default=[1024, 2048, 4096, 8192],
                      metavar="L,..")
    what.add_argument("--backward-D", type=_ints, default=[64, 128], metavar="D,..")
    what.add_argument("--backward-blocks", metavar="BrxBc,..",
                      type=lambda s: [tuple(int(x) for x in b.split("x")) for b in s.split(",")],
                      help="with --backward: time the streaming backward at these tile sizes "
                           "(e.g. 64x64,128x64) side by side at each L and D, instead")
    what.add_argument("--q-blocks", type=_ints, default=[16, 32, 64, 128, 256], metavar="Br,..")
    what.add_argument("--kv-blocks", type=_ints, default=[16, 32, 64, 128, 256], metavar="Bc,..")
    how = p.add_argument_group("how")
    how.add_argument("--q-block", type=int, help="streaming Q block Br (default: per D)")
    how.add_argument("--kv-block", type=int, help="streaming KV block Bc (default: per D)")
    how.add_argument("--repeats", type=int, default=None,
                     help="timing rounds per case (default 7, --quick 5)")
    how.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                     help="cut rounds (to >= 3) to fit this timing time per case "
                          "(default 60, --quick 3)")
    how.add_argument("--settle", type=float, default=0.2, metavar="SECONDS",
                     help="quiet time before each timed sample, so thread pools left "
                          "spinning by the previous contender have gone to sleep")
    how.add_argument("--tol", type=float, default=DEFAULT_TOL,
                     help=f"correctness gate, relative to max |O| (default {DEFAULT_TOL:g})")
    how.add_argument("--threads", type=int, help="threads for Numba, torch and NumPy's BLAS")
    how.add_argument("--no-memory", action="store_true",
                     help="skip the peak-memory subprocesses")
    how.add_argument("--roof-n", type=int, default=2048, help="GEMM roof matrix size")
    how.add_argument("--bandwidth-mib", type=int, default=1024,
                     help="array size of the run's read-bandwidth test (decode cases read "
                          "their own K and V)")
    how.add_argument("--seed", type=int, default=0)
    out = p.add_argument_group("output")
    out.add_argument("--json", metavar="FILE", help="write every number to FILE (JSON)")
    out.add_argument("--markdown", action="store_true",
                     help="print the report as BENCHMARKS.md shows it")
    out.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p.parse_args(argv)


class Progress:
    """Progress on stderr: one rewritten line on a terminal, timestamped lines otherwise."""

    def __init__(self, enabled: bool = True, stream=sys.stderr):
        self.enabled, self.stream = enabled, stream
        self.tty = stream.isatty()
        self.t0 = time.perf_counter()
        self.width = 0

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.perf_counter() - self.t0:6.1f} s] {msg}"
        if self.tty:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


def _warm(contenders, progress) -> None:
    """Compile or load every kernel and start every thread pool before anything is timed;
    measure the kernels' choices when this host has none stored (as ``make warm`` does)."""
    import kernels
    from kernels.autotune import tune_if_missing

    progress("warm-up: Numba kernels (compile or cache load)")
    kernels.warmup()
    tune_if_missing(progress)
    for c in contenders:
        tiny = C.Case("custom", 1, 2, 1, 4, 8, 16)
        c.prepare(tiny, *C.make_inputs(tiny))()


def main(argv=None) -> int:
    args = parse_args(argv)
    progress = Progress(not args.quiet)
    if args.backward:
        return _backward(args, progress)
    names = args.contenders
    if names and "torch" in names and not torch_available():
        print("torch is not installed: pip install -r requirements-bench.txt", file=sys.stderr)
        return 2
    contenders = default_contenders(names, args.q_block, args.kv_block)
    if args.threads:
        if any(c.name == "torch" for c in contenders):  # loaded now: its pool is set too
            if torch_in_process():
                import torch  # noqa: F401
            else:
                torchworker.worker()
        set_threads(args.threads)
    if args.case:
        try:
            cases = [C.parse_case(s) for s in args.case]
        except ValueError as e:
            print(f"--case: {e}", file=sys.stderr)
            return 2
    else:
        cases = C.quick_suite() if args.quick else C.full_suite()
    settings = Settings(
        repeats=args.repeats or (5 if args.quick else 7),
        budget_s=args.budget if args.budget is not None else (3.0 if args.quick else 60.0),
        settle_s=args.settle, tol=args.tol, seed=args.seed, memory=not args.no_memory,
        threads=args.threads, q_block=args.q_block, kv_block=args.kv_block,
        roof_n=args.roof_n, read_torch=torch_available() and torch_in_process())

    if args.autotune:
        from kernels import tuning_summary
        from kernels.autotune import autotune

        tuned = autotune(budget_s=args.autotune_budget, progress=progress)
        progress.done()
        print(f"Kernel choices: {tuning_summary()['text']}")
        print("Measured (time relative to the built-in default's, geometric mean over the "
              "problems; best first):")
        for what, cands in tuned.measured.items():
            ranked = sorted(cands.items(), key=lambda x: x[1]["vs_default"])
            print(f"  {what}: " + ", ".join(f"{c} {m['vs_default']:.2f}" for c, m in ranked))
        if not (args.quick or args.case or args.sweep_blocks):
            return 0
    cpu0 = cpu_snapshot()
    _warm(contenders, progress)
    machine = machine_info()
    progress("cold start: a new process to its first result")
    cold = cold_start_seconds()
    progress(f"GEMM roof: numpy float32 {args.roof_n}^3")
    roof = gemm_roof(args.roof_n)
    progress(f"read bandwidth: {args.bandwidth_mib} MiB float32")
    bandwidth = read_bandwidth(args.bandwidth_mib * 2**20, threads=args.threads,
                               torch=settings.read_torch)

    results, sweeps = [], []
    if args.sweep_blocks:
        L = args.sweep_L or (1024 if args.quick else 4096)
        for D in args.sweep_D:
            case = C.prefill(L, D)
            sweeps.append(sweep_blocks(case, args.q_blocks, args.kv_blocks, settings,
                                       lambda m, D=D: progress(f"sweep D={D} L={L}: {m}")))
    else:
        results = run_suite(cases, contenders, settings, progress)
    progress("GEMM roof again (drift check)")
    roof_end = gemm_roof(args.roof_n)
    runs = [roof["gflops"], roof_end["gflops"]]
    roof = max(roof, roof_end, key=lambda r: r["gflops"]) | {"runs_gflops": runs}
    machine["loadavg_end"] = list(os.getloadavg())
    machine["other_cores"] = other_cores(cpu0, cpu_snapshot())
    progress.done()

    rows = metrics(results, roof["gflops"], bandwidth["gbps"])
    command = "python -m attnviz.bench " + " ".join(shlex.quote(a) for a in
                                                     (sys.argv[1:] if argv is None else argv))
    if args.markdown:
        print(format_markdown(machine, roof, bandwidth, cold, rows, sweeps, command.strip()))
    else:
        print("\n".join(describe_machine(machine) + roof_lines(roof, bandwidth, cold)))
        if rows:
            print(format_text(rows))
        for s in sweeps:
            print()
            print("\n".join(format_sweep(s)))
        if sweeps:
            print("\nBest (q_block, kv_block) per D: " + ", ".join(
                f"D={s.case.D}: {s.best}" for s in sweeps))
    if args.json:
        config = {"command": command.strip(), "cases": [c.to_dict() for c in cases],
                  "contenders": [c.name for c in contenders], "settings": asdict(settings),
                  "sweep_blocks": args.sweep_blocks}
        with open(args.json, "w") as f:
            json.dump(to_json(machine, config, roof, bandwidth, cold, rows, sweeps), f,
                      indent=1, allow_nan=False)
    return 0


def _backward(args, progress) -> int:
    """``--backward``: the three backward passes side by side (``bench.backward``)."""
    import kernels

    from . import backward

    names = args.contenders or list(backward.NAMES)
    unknown = [n for n in names if n not in backward.NAMES]
    if unknown:
        print(f"--contenders with --backward: {unknown} unknown; choose from "
              f"{','.join(backward.NAMES)}", file=sys.stderr)
        return 2
    if args.threads:
        set_threads(args.threads)
    progress("warm-up: Numba kernels (compile or cache load)")
    kernels.warmup()
    cpu0 = cpu_snapshot()
    if args.backward_blocks:
        return _backward_blocks(args, progress, cpu0)
    rows = backward.run(args.backward_L, args.backward_D, names,
                        repeats=args.repeats or 5,
                        budget_s=args.budget if args.budget is not None else 60.0,
                        memory=not args.no_memory, seed=args.seed, progress=progress)
    machine = machine_info()
    machine["loadavg_end"] = list(os.getloadavg())
    machine["other_cores"] = other_cores(cpu0, cpu_snapshot())
    progress.done()
    command = "python -m attnviz.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    print("\n".join(describe_machine(machine)))
    print(f"\nCommand: `{command.strip()}`\n")
    print("\n".join(backward.table(rows)))
    print()
    print("\n".join(backward.gate_lines(rows)))
    return 0


def _backward_blocks(args, progress, cpu0) -> int:
    """``--backward --backward-blocks``: the streaming backward's tile sizes, side by side."""
    import numpy as np

    from . import backward

    lines = []
    for D in args.backward_D:
        for L in args.backward_L:
            t = backward.sweep_blocks(L, D, args.backward_blocks, repeats=args.repeats or 5,
                                      budget_s=args.budget if args.budget is not None
                                      else 60.0, seed=args.seed,
                                      progress=lambda m, L=L, D=D: progress(
                                          f"backward blocks L={L} D={D}: {m}"))
            best = min(t, key=lambda b: min(t[b]))
            lines.append(f"| L={L} D={D} | " + " | ".join(
                f"{'**' if b == best else ''}{1e3 * min(x):,.0f} / {1e3 * np.median(x):,.0f}"
                f"{'**' if b == best else ''}" for b, x in t.items()) + " |")
    machine = machine_info()
    machine["other_cores"] = other_cores(cpu0, cpu_snapshot())
    progress.done()
    print("\n".join(describe_machine(machine)))
    head = ["case"] + [f"{b[0]}x{b[1]} ms (min / median)" for b in args.backward_blocks]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    print("\n".join(lines))
    return 0
