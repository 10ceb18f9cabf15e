"""Matrix products of few rows, as plain loops or through BLAS: one flag chooses.

A decode tile has only g = Hq / Hkv rows (often 1-8) against Bc keys. Whether BLAS's
``gemm`` beats two plain loops that stream each K/V row through the cache once depends on
the library and the machine: on oneMKL (Intel) BLAS measured 1.1-1.5x faster on such tiles,
on OpenBLAS (AMD) the loops were (BENCHMARKS.md). So the choice is a flag, measured per host
by ``kernels.autotune`` and passed down by the drivers; never a copy of the kernel.

    gemm_nt(alpha, A, B, C, loops):  C = alpha * A B^T       A [M, D], B [N, D], C [M, N]
    gemm_nn(A, B, beta, C, loops):   C = A B + beta * C      A [M, N], B [N, D], C [M, D]

The loops keep the inner index contiguous (d over a row of B), so LLVM vectorizes them.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._config import FASTMATH
from .blas import gemm


@njit(cache=True, fastmath=FASTMATH, inline="always")
def gemm_nt(alpha, A, B, C, loops):
    """C = alpha * A B^T for A [M, D], B [N, D], C [M, N]; ``loops``: plain loops, else BLAS."""
    if not loops:
        gemm(alpha, A, B, 0.0, C, True)
        return
    M, D = A.shape
    for n in range(B.shape[0]):  # each row of B read once, for every row of A
        for i in range(M):
            s = np.float32(0.0)
            for d in range(D):
                s += A[i, d] * B[n, d]
            C[i, n] = alpha * s


@njit(cache=True, fastmath=FASTMATH, inline="always")
def gemm_nn(A, B, beta, C, loops):
    """C = A B + beta * C for A [M, N], B [N, D], C [M, D], beta 0 or 1; ``loops``: plain
    loops, else BLAS. As in BLAS, a 0 in A times a NaN in B gives NaN (0 * NaN)."""
    if not loops:
        gemm(1.0, A, B, beta, C, False)
        return
    if beta == 0.0:
        C[:] = 0.0
    for n in range(B.shape[0]):  # each row of B read once, for every row of A
        for i in range(A.shape[0]):
            a = A[i, n]
            for d in range(B.shape[1]):
                C[i, d] += a * B[n, d]
