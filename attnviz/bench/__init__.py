"""Benchmark of exact attention on CPU (issue 4): ``python -m attnviz.bench --help``.

Modules, in the order the data flows:

* ``cases``       what is measured: shapes, masks, exact FLOP and byte counts, the suites
* ``contenders``  NumPy standard, Numba standard, Numba streaming, torch SDPA
* ``machine``     GEMM roof, read bandwidth, cold start, other jobs' load, threads, description
* ``measure``     the correctness gate, round-robin timing, peak memory in a fresh subprocess
                  (``memprobe``)
* ``sweep``       streaming over a grid of (q_block, kv_block)
* ``report``      derived metrics, text / Markdown / JSON
* ``cli``         argument parsing, progress on stderr, printing

The measuring functions return data and print nothing, so the app's timing panel can call
them too (e.g. ``sweep_blocks`` for the (Q block, KV block) heatmap).
"""
from .cases import Case, attention_flops, kv_read_bytes, visible_pairs
from .contenders import Contender, default_contenders, numpy_standard_attention
from .machine import gemm_roof, read_bandwidth
from .measure import Result, Settings, run_case, run_suite
from .sweep import Sweep, sweep_blocks

__all__ = [
    "Case", "Contender", "Result", "Settings", "Sweep", "attention_flops", "default_contenders",
    "gemm_roof", "kv_read_bytes", "numpy_standard_attention", "read_bandwidth", "run_case",
    "run_suite", "sweep_blocks", "visible_pairs",
]
