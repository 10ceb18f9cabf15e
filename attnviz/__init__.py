"""attnviz: block-wise streaming attention, step by step.

The package is pure Python + NumPy on top of the Numba kernels in ``kernels/``; only
``attnviz.ui`` (and the top-level ``app.py``) import Streamlit.
"""
from .reference import attention_reference
from .trace import Step, Trace, TraceConfig, run_trace, trace_config

__all__ = ["Step", "Trace", "TraceConfig", "attention_reference", "run_trace", "trace_config"]
