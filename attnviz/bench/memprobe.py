"""Peak extra memory of one attention call, measured in this (fresh) process.

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
import sys
from dataclasses import fields, replace

from ..rss import reset_peak, status_bytes
from .cases import Case, make_inputs
from .contenders import default_contenders


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
