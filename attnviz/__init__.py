"""attnviz: block-wise streaming attention, step by step.

The package is pure Python + NumPy on top of the Numba kernels in ``kernels/``; only
``attnviz.ui`` (and the top-level ``app.py``) import Streamlit.
"""
from .reference import attention_reference
from .trace import Step, Trace, TraceConfig, run_trace, trace_config

__all__ = [
    "Step", "Trace", "TraceConfig", "attention_reference", "run_trace", "trace_config", "warmup",
]


def warmup(progress=None, *, autotune: bool = True) -> None:
    """Compile (or load from Numba's cache) the kernels and the traced driver's entry points,
    so that no visitor waits for a JIT compile; then, with ``autotune`` and when this host
    has no stored tuning, measure the kernels' choices once (``kernels.autotune``, <= 20 s;
    ``progress(text)`` gets its lines; ``ATTNVIZ_AUTOTUNE=off`` skips it)."""
    import numpy as np

    import kernels

    kernels.warmup()
    if autotune:
        from kernels.autotune import tune_if_missing

        tune_if_missing(progress)
    x = np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32)
    trace = run_trace(x, x, x, q_block=2, kv_block=3)
    trace.tiles(0)
    from . import splitkv  # the split-KV lab calls the tile routines from Python

    splitkv.merge(splitkv.partials(x[:2], x, x, bounds=[0, 2, 5]), [1, 0])
    from .backward_trace import run_backward_trace  # the Backward tab (and its kernels)

    run_backward_trace(x, x, x, x, q_block=2, kv_block=3)
