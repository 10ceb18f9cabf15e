"""Peak extra memory of one attention call, measured in a fresh process: this module is
both that process (``main``) and the parent's launcher (``probe_memory``, ``peak_memory``).

    python -m attnviz.bench.memprobe '{"cases": [{...}, ...], "contender": "numba_streaming"}'

prints one JSON line, a list with per case ``extra_bytes`` = peak RSS during the call - RSS
right before it, with the inputs (and a torch mask) already allocated and the kernels already
warm (tiny calls of the same types first, so JIT compile, thread pools and caches are not
counted).

The peak is read as ``VmHWM`` from ``/proc/self/status`` after resetting it with
``/proc/self/clear_refs`` (Linux >= 4.0); where that reset is not allowed, ``ru_maxrss`` is
used, which is only right because nothing before the call peaked above the RSS at the call.
"""
from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
from dataclasses import fields, replace
from typing import TYPE_CHECKING

from ..rss import reset_peak, status_bytes
from .cases import Case, make_inputs
from .contenders import ALL_NAMES, default_contenders
from .machine import child_env

if TYPE_CHECKING:
    from .measure import Result, Settings


def measure(cases: list[Case], contender: str, *, seed=0, q_block=None, kv_block=None
            ) -> list[dict]:
    """Per case: {"extra_bytes", "rss_before", "peak", "method", "out_bytes"}, or
    {"refused": reason}. Cases run one after the other; each one's arrays are freed (and,
    with glibc's mmap threshold fixed by the parent, unmapped) before the next."""
    (c,) = default_contenders([contender], q_block=q_block, kv_block=kv_block)
    # warm-up on a tiny call with the same dtypes, heads and path (decode stays decode)
    for case in cases:
        tiny = replace(case, B=1, Lq=min(case.Lq, 8), Lk=min(case.Lk, 16), q_offset=None,
                       window=0)
        c.prepare(tiny, *make_inputs(tiny, seed))()
    reset_ok = reset_peak()
    if not reset_ok and len(cases) > 1:
        raise RuntimeError("peak RSS cannot be reset here: probe one case per process")
    out = []
    for case in cases:
        q, k, v = make_inputs(case, seed)
        call = c.prepare(case, q, k, v)
        gc.collect()
        reset_peak()
        rss_before = status_bytes("VmRSS")
        try:
            result = call()
        except MemoryError as e:
            out.append({"refused": f"refused by its guard: {e}"})
            continue
        if reset_ok:
            peak, method = status_bytes("VmHWM"), "peak RSS (VmHWM, reset before the call)"
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            method = "peak RSS (ru_maxrss)"
        out.append({"extra_bytes": max(0, peak - rss_before), "rss_before": rss_before,
                    "peak": peak, "method": method, "out_bytes": int(result.nbytes)})
        del q, k, v, call, result
        gc.collect()
    return out


# --- the parent's side: one fresh subprocess per batch of cases ------------------------------

def probe_memory(results: list[Result], settings: Settings, progress=lambda msg: None
                 ) -> None:
    """Fill ``measured_bytes`` of every ok or refused result of a built-in contender.

    One fresh subprocess per contender runs its cases one after the other, resetting the
    peak RSS before each call; where the reset is not allowed, one subprocess per call.
    """
    todo: dict[str, list[Result]] = {}
    for res in results:
        if res.status not in ("ok", "refused"):
            continue
        if res.contender not in ALL_NAMES:
            res.memory_note = "not probed (not a built-in contender)"
            continue
        todo.setdefault(res.contender, []).append(res)
    batched = reset_peak()  # resettable: one probe process can measure many calls
    for name, group in todo.items():
        batches = [group] if batched else [[r] for r in group]
        for batch in batches:
            progress(f"peak memory: {name} on {len(batch)} case{'s' * (len(batch) > 1)} "
                     "(fresh subprocess)")
            probes = peak_memory([r.case for r in batch], name, seed=settings.seed,
                                 q_block=settings.q_block, kv_block=settings.kv_block,
                                 threads=settings.threads)
            for res, probe in zip(batch, probes, strict=True):
                if "extra_bytes" in probe:
                    res.measured_bytes, res.memory_note = probe["extra_bytes"], probe["method"]
                else:
                    res.memory_note = probe.get("refused") or probe.get("error", "probe failed")


def peak_memory(cases: list[Case], contender: str, *, seed: int = 0, q_block=None,
                kv_block=None, threads: int | None = None, timeout_s: float | None = None
                ) -> list[dict]:
    """Peak extra memory of one call per case, in one fresh subprocess (``memprobe.py``)."""
    spec = {"cases": [c.to_dict() for c in cases], "contender": contender, "seed": seed,
            "q_block": q_block, "kv_block": kv_block, "threads": threads}
    # glibc: a fixed mmap threshold, so every array of 64 KiB or more is a fresh mapping,
    # counted when touched and unmapped when freed (by default the threshold grows up to
    # 32 MiB as memory is freed, and later arrays may reuse resident heap unseen)
    env = child_env() | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    if contender == "torch":  # torch's own memory, in that process: no MKL bound beside it
        env["ATTNVIZ_BLAS"] = "openblas"
    try:
        proc = subprocess.run([sys.executable, "-m", "attnviz.bench.memprobe", json.dumps(spec)],
                              capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return [{"error": f"memory probe timed out after {timeout_s} s"}] * len(cases)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [{"error": f"memory probe failed ({proc.returncode}): {tail}"}] * len(cases)
    return json.loads(lines[-1])


def main(argv=None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    names = {f.name for f in fields(Case)}
    cases = [Case(**{k: v for k, v in d.items() if k in names}) for d in spec["cases"]]
    if spec.get("threads"):
        from .machine import set_threads

        if spec["contender"] == "torch":
            import torch  # noqa: F401  (so that set_threads sets its pool too)
        set_threads(spec["threads"])
    result = measure(cases, spec["contender"], seed=spec.get("seed", 0),
                     q_block=spec.get("q_block"), kv_block=spec.get("kv_block"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
