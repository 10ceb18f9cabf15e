"""Numba kernels for exact attention: block-wise streaming (online softmax) and the standard
materialized baseline.

    from kernels import streaming_attention, standard_attention
    O = streaming_attention(q, k, v)                       # causal, bottom-right aligned
    O, lse = streaming_attention(q, k, v, return_lse=True)
    dq, dk, dv = streaming_attention_backward(q, k, v, O, lse, dO)   # gradients

q [B, Hq, Lq, D], k/v [B, Hkv, Lk, D] with Hq % Hkv == 0 (GQA by indexing, never by
copying). Inputs may be float16/32/64; arithmetic and outputs are float32.
"""
from ._blaslib import BlasLib
from ._blaslib import bind as _bind_blas
from ._config import configure_numba, limit_scipy_blas_to_one_thread

configure_numba()  # before any kernel module is imported (cache folder, threading layer)
limit_scipy_blas_to_one_thread()
BLAS: BlasLib = _bind_blas()  # the library the tile GEMMs call (ATTNVIZ_BLAS)

from .api import (  # noqa: E402
    DEFAULT_MEMORY_FRACTION,
    decode_block,
    decode_split,
    default_blocks,
    standard_attention,
    streaming_attention,
    tile_products,
    tuning_summary,
    warmup,
)
from .backward import standard_attention_backward, streaming_attention_backward  # noqa: E402

__all__ = [
    "BLAS",
    "DEFAULT_MEMORY_FRACTION",
    "decode_block",
    "decode_split",
    "default_blocks",
    "standard_attention",
    "standard_attention_backward",
    "streaming_attention",
    "streaming_attention_backward",
    "tile_products",
    "tuning_summary",
    "warmup",
]
